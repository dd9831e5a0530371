#!/usr/bin/env python3
"""PyTorch + PEFT's seconds per LoRA training step for the same work as `honebench train`:
8 sequences x 256 tokens, loss on every token, rank 16 / alpha 32 on all seven linear
targets, AdamW, fp32 on the CPU with THREADS threads. Prints one JSON line.

Usage: bench-torch-train.py MODEL.gguf THREADS
"""
import json, os, resource, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model

model_path, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
directory, name = os.path.dirname(os.path.abspath(model_path)), os.path.basename(model_path)
model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
text = " ".join(["The history of science is the study of the development of science and scientific knowledge, "
                 "including both the natural and social sciences."] * 64)
ids = tokenizer(text)["input_ids"]
batch = torch.tensor([ids[s * 7:s * 7 + 256] for s in range(8)])
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)


def step():
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    return time.perf_counter() - start


step()  # warm-up
times = sorted(step() for _ in range(3))
print(json.dumps({"bench": "train-torch", "threads": threads, "s_per_step": round(times[1], 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
