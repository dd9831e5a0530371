#!/usr/bin/env python3
"""llama.cpp's side of `ops/bench decode|prefill`: the same model file, threads and token
counts through llama-cpp-python. Prints one JSON object: prefill and decode tokens/s
(median of the repeats)."""
import json, statistics, sys, time
from llama_cpp import Llama

model, threads, prompt_tokens, decode_tokens, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=model, n_ctx=prompt_tokens + decode_tokens + 8, n_threads=threads, n_threads_batch=threads,
            n_batch=prompt_tokens, verbose=False)
text = " ".join(["The history of science is the study of the development of science and scientific knowledge."] * 64)
ids = llm.tokenize(text.encode(), add_bos=False)[:prompt_tokens]
prefill, decode = [], []
for _ in range(repeats):
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prefill.append(len(ids) / (time.perf_counter() - t))
    llm.reset()
    llm.eval(ids[:16])
    t = time.perf_counter()
    for i in range(decode_tokens):
        llm.eval([ids[16 + (i % 400)]])
    decode.append(decode_tokens / (time.perf_counter() - t))
print(json.dumps({"prefill_tok_s": statistics.median(prefill), "decode_tok_s": statistics.median(decode)}))
