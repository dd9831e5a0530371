#!/usr/bin/env python3
"""Checks that an adapter Hone wrote loads in PEFT and gives Hone's numbers.

  honectl train --data … --out ADAPTER_DIR
  honectl generate --adapter ADAPTER_DIR --exact --json --prompt "$PROMPT" > hone.json
  python check_peft_load.py MODEL.gguf ADAPTER_DIR "$PROMPT" hone.json

Loads the GGUF in transformers (float32), the adapter with PeftModel.from_pretrained, runs
the prompt plus Hone's greedy tokens, and compares ln p of each token Hone chose with
Hone's logprobs; prints the largest difference and whether PEFT's greedy choice agrees.
"""
import json, os, sys
import torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
from llama_cpp import Llama

model_path, adapter_dir, prompt, hone_json = sys.argv[1:5]
hone = json.load(open(hone_json))
vocab = Llama(model_path=model_path, vocab_only=True, verbose=False)
prompt_ids = vocab.tokenize(prompt.encode(), add_bos=False, special=True)
base = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(model_path)), gguf_file=os.path.basename(model_path), dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir)
tokens = prompt_ids + hone["token_ids"]
with torch.no_grad():
    logprobs = torch.log_softmax(model(input_ids=torch.tensor([tokens])).logits[0].double(), -1)
diffs, agree = [], 0
for i, (token, theirs) in enumerate(zip(hone["token_ids"], hone["logprobs"])):
    row = logprobs[len(prompt_ids) + i - 1]
    diffs.append(abs(float(row[token]) - theirs))
    agree += int(int(row.argmax()) == token)
print(json.dumps({"tokens": len(diffs), "max_abs_logprob_diff": max(diffs), "greedy_agree": agree, "text": hone["text"]}))
