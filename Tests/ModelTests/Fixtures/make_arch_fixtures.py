#!/usr/bin/env python3
"""A tiny random Qwen2 model as GGUF (q/k/v biases, RoPE over half-split pairs, untied head)
and its float32 logits in transformers 5.23 (which loads the GGUF itself) and llama.cpp
(llama-cpp-python 0.3.36), in logits.json's format for LogitsParityTests' checks.

The vocabulary is SmolLM2's first 2048 tokens (with the merges among them), so the file
stays small; prompts are token ids.

Run:  python make_arch_fixtures.py SMOLLM2.gguf OUT_DIR
Writes OUT_DIR/tiny-qwen2.gguf and OUT_DIR/logits-tiny-qwen2.json.
"""
import json, os, random, sys
import numpy as np
import gguf

MODEL, OUT = sys.argv[1], sys.argv[2]
V, C, F, H, KV, L = 2048, 64, 128, 4, 2, 2
D = C // H
rng = np.random.default_rng(18)

source = gguf.GGUFReader(MODEL)
tokens = source.fields["tokenizer.ggml.tokens"].contents()[:V]
types = source.fields["tokenizer.ggml.token_type"].contents()[:V]
known = set(tokens)
merges = [m for m in source.fields["tokenizer.ggml.merges"].contents()
          if all(part in known for part in m.split(" ")) and m.replace(" ", "") in known]

path = os.path.join(OUT, "tiny-qwen2.gguf")
w = gguf.GGUFWriter(path, "qwen2")
w.add_block_count(L); w.add_context_length(256); w.add_embedding_length(C); w.add_feed_forward_length(F)
w.add_head_count(H); w.add_head_count_kv(KV); w.add_rope_freq_base(1_000_000.0); w.add_layer_norm_rms_eps(1e-6)
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("qwen2")
w.add_token_list(tokens); w.add_token_types(types); w.add_token_merges(merges)
w.add_bos_token_id(1); w.add_eos_token_id(2)

def tensor(name, *shape, scale=0.1, offset=0.0):
    w.add_tensor(name, (rng.standard_normal(shape) * scale + offset).astype(np.float32))

tensor("token_embd.weight", V, C, scale=0.5)
tensor("output.weight", V, C, scale=0.2)
tensor("output_norm.weight", C, offset=1.0)
for i in range(L):
    tensor(f"blk.{i}.attn_norm.weight", C, offset=1.0)
    tensor(f"blk.{i}.attn_q.weight", H * D, C, scale=0.2)
    tensor(f"blk.{i}.attn_q.bias", H * D, scale=0.5)
    tensor(f"blk.{i}.attn_k.weight", KV * D, C, scale=0.2)
    tensor(f"blk.{i}.attn_k.bias", KV * D, scale=0.5)
    tensor(f"blk.{i}.attn_v.weight", KV * D, C, scale=0.2)
    tensor(f"blk.{i}.attn_v.bias", KV * D, scale=0.5)
    tensor(f"blk.{i}.attn_output.weight", C, H * D, scale=0.2)
    tensor(f"blk.{i}.ffn_norm.weight", C, offset=1.0)
    tensor(f"blk.{i}.ffn_gate.weight", F, C, scale=0.2)
    tensor(f"blk.{i}.ffn_up.weight", F, C, scale=0.2)
    tensor(f"blk.{i}.ffn_down.weight", C, F, scale=0.2)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

import torch
from transformers import AutoModelForCausalLM
from llama_cpp import Llama
hf = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny-qwen2.gguf", dtype=torch.float32).eval()
cpp = Llama(model_path=path, n_ctx=256, logits_all=True, n_threads=2, verbose=False)
prompts = [[int(t) for t in np.random.default_rng(s).integers(3, V, n)] for s, n in [(1, 12), (2, 30), (3, 5), (4, 64)]]
SAMPLE = sorted(random.Random(11).sample(range(V), 256))
records, cpp_abs, cpp_agree, cpp_total = [], 0.0, 0, 0
for ids in prompts:
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].numpy()
        gen = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, output_scores=True,
                          return_dict_in_generate=True, pad_token_id=2)
    margins = [float(torch.topk(sc[0], 2).values[0] - torch.topk(sc[0], 2).values[1]) for sc in gen.scores]
    cpp.reset(); cpp.eval(ids)
    cl = np.array(cpp.scores[: len(ids)], dtype=np.float32)
    cpp_abs += float(np.abs(cl - logits).mean()) * len(ids)
    cpp_agree += int((cl.argmax(-1) == logits.argmax(-1)).sum()); cpp_total += len(ids)
    positions = [{"top": [[int(i), float(row[i])] for i in np.argsort(-row)[:20]], "sample": [float(row[i]) for i in SAMPLE],
                  "mean": float(row.mean()), "std": float(row.std())} for row in logits]
    records.append({"prompt": "", "ids": ids, "positions": positions,
                    "greedy": gen.sequences[0][len(ids):].tolist(), "greedy_margins": margins})
import hashlib
with open(os.path.join(OUT, "logits-tiny-qwen2.json"), "w") as f:
    json.dump({"model_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(), "sample_indices": SAMPLE,
               "prompts": records, "llamacpp_mean_abs_diff": cpp_abs / cpp_total,
               "llamacpp_top1_agreement": cpp_agree / cpp_total}, f)
print("tiny qwen2:", os.path.getsize(path), "bytes;", len(merges), "merges; llama.cpp mean |Δ|", cpp_abs / cpp_total,
      "top-1", cpp_agree / cpp_total, file=sys.stderr)
