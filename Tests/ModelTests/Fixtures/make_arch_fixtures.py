#!/usr/bin/env python3
"""Tiny random models of other architectures as GGUF, and their logits in logits.json's
format for LogitsParityTests' checks:
- tiny-qwen2: q/k/v biases, RoPE over half-split pairs, untied head; reference: transformers
  5.23 float32 (which loads the GGUF itself), llama.cpp beside it;
- tiny-llama3: Llama 3.1's `rope_freqs` frequency factors (here random, 1-8, so they show at
  short positions), untied head, llama-bpe pre-tokenizer; reference: llama.cpp
  (llama-cpp-python 0.3.36), since transformers does not read `rope_freqs` from a GGUF.

The vocabulary is SmolLM2's first 2048 tokens (with the merges among them), so the file
stays small; prompts are token ids.

Run:  python make_arch_fixtures.py SMOLLM2.gguf OUT_DIR
Writes OUT_DIR/tiny-ARCH.gguf and OUT_DIR/logits-tiny-ARCH.json for each.
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

def write_model(arch):
    path = os.path.join(OUT, f"tiny-{arch}.gguf")
    w = gguf.GGUFWriter(path, "qwen2" if arch == "qwen2" else "llama")
    w.add_block_count(L); w.add_context_length(256); w.add_embedding_length(C); w.add_feed_forward_length(F)
    w.add_head_count(H); w.add_head_count_kv(KV); w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0 if arch == "qwen2" else 500_000.0)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "llama-bpe")
    w.add_token_list(tokens); w.add_token_types(types); w.add_token_merges(merges)
    w.add_bos_token_id(1); w.add_eos_token_id(2)

    def tensor(name, *shape, scale=0.1, offset=0.0):
        w.add_tensor(name, (rng.standard_normal(shape) * scale + offset).astype(np.float32))

    tensor("token_embd.weight", V, C, scale=0.5)
    tensor("output.weight", V, C, scale=0.2)
    tensor("output_norm.weight", C, offset=1.0)
    if arch == "llama3":
        w.add_tensor("rope_freqs.weight", rng.uniform(1.0, 8.0, D // 2).astype(np.float32))
    for i in range(L):
        tensor(f"blk.{i}.attn_norm.weight", C, offset=1.0)
        for part, rows in [("q", H * D), ("k", KV * D), ("v", KV * D)]:
            tensor(f"blk.{i}.attn_{part}.weight", rows, C, scale=0.2)
            if arch == "qwen2":
                tensor(f"blk.{i}.attn_{part}.bias", rows, scale=0.5)
        tensor(f"blk.{i}.attn_output.weight", C, H * D, scale=0.2)
        tensor(f"blk.{i}.ffn_norm.weight", C, offset=1.0)
        tensor(f"blk.{i}.ffn_gate.weight", F, C, scale=0.2)
        tensor(f"blk.{i}.ffn_up.weight", F, C, scale=0.2)
        tensor(f"blk.{i}.ffn_down.weight", C, F, scale=0.2)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


import hashlib
import torch
from transformers import AutoModelForCausalLM
from llama_cpp import Llama
prompts = [[int(t) for t in np.random.default_rng(s).integers(3, V, n)] for s, n in [(1, 12), (2, 30), (3, 5), (4, 64)]]
SAMPLE = sorted(random.Random(11).sample(range(V), 256))

def greedy_cpp(cpp, ids, n):
    """llama.cpp's greedy continuation and top-1 margins, from its own logits."""
    cpp.reset(); cpp.eval(ids)
    out, margins = [], []
    for _ in range(n):
        row = np.array(cpp.scores[cpp.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-row)[:2]
        out.append(int(top[0])); margins.append(float(row[top[0]] - row[top[1]]))
        cpp.eval([int(top[0])])
    return out, margins

for arch in ["qwen2", "llama3"]:
    path = write_model(arch)
    cpp = Llama(model_path=path, n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    hf = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    records, cpp_abs, cpp_agree, cpp_total = [], 0.0, 0, 0
    for ids in prompts:
        cpp.reset(); cpp.eval(ids)
        cl = np.array(cpp.scores[: len(ids)], dtype=np.float32)
        with torch.no_grad():
            hl = hf(torch.tensor([ids])).logits[0].numpy()
        if arch == "qwen2":
            logits = hl
            with torch.no_grad():
                gen = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True, pad_token_id=2)
            greedy = gen.sequences[0][len(ids):].tolist()
            margins = [float(torch.topk(sc[0], 2).values[0] - torch.topk(sc[0], 2).values[1]) for sc in gen.scores]
        else:
            logits = cl
            greedy, margins = greedy_cpp(cpp, ids, 16)
            print(arch, "transformers (ignores rope_freqs) vs llama.cpp: mean |Δ|", float(np.abs(hl - cl).mean()), file=sys.stderr)
        cpp_abs += float(np.abs(cl - logits).mean()) * len(ids)
        cpp_agree += int((cl.argmax(-1) == logits.argmax(-1)).sum()); cpp_total += len(ids)
        positions = [{"top": [[int(i), float(row[i])] for i in np.argsort(-row)[:20]], "sample": [float(row[i]) for i in SAMPLE],
                      "mean": float(row.mean()), "std": float(row.std())} for row in logits]
        records.append({"prompt": "", "ids": ids, "positions": positions, "greedy": greedy, "greedy_margins": margins})
    with open(os.path.join(OUT, f"logits-tiny-{arch}.json"), "w") as f:
        json.dump({"model_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(), "sample_indices": SAMPLE,
                   "reference": "transformers" if arch == "qwen2" else "llama.cpp",
                   "prompts": records, "llamacpp_mean_abs_diff": cpp_abs / cpp_total,
                   "llamacpp_top1_agreement": cpp_agree / cpp_total}, f)
    print(f"tiny {arch}:", os.path.getsize(path), "bytes;", len(merges), "merges; llama.cpp mean |Δ|", cpp_abs / cpp_total,
          "top-1", cpp_agree / cpp_total, file=sys.stderr)
