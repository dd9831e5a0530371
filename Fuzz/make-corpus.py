#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus, Fuzz/Corpus/TARGET/ (small files, committed).

Seeds are valid inputs of each parser (and a few near misses), so the fuzzers start from
the shapes the parsers accept. Inputs a fuzzer found a fault with are added beside them by
hand (named finding-*) and never regenerated. Run from the checkout: python3 Fuzz/make-corpus.py
"""
import json, os, shutil, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Corpus")

def put(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# gguf: the engine's own small test file (every metadata and tensor type).
shutil.copy(os.path.join(root, "../../Tests/ModelTests/Fixtures/types.gguf"), os.path.join(root, "gguf", "types.gguf"))

# Findings: a tensor offset past Int.max, and a shape whose element count overflows an
# Int, trapped GGUFFile's arithmetic before it checked bounds (found by the mutation run).
def gguf_one_tensor(dims, offset):
    name = b"t"
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, offset)
    return out + b"\0" * (64 - len(out) % 32)
put("gguf", "finding-offset-overflow.gguf", gguf_one_tensor([32], 0xFFFF_FFFF_FFFF_FFE0))
put("gguf", "finding-shape-overflow.gguf", gguf_one_tensor([0xFFFF_FFFF] * 4, 0))

# adapter: a safetensors file with LoRA-named tensors and Hone's metadata (wrong shapes for
# SmolLM2 on purpose: the check must refuse it with a reason).
def safetensors(tensors, metadata):
    header, offset, blob = {"__metadata__": metadata}, 0, b""
    for name, (shape, values) in tensors.items():
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data); blob += data
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob
config = json.dumps({"rank": 1, "alpha": 2, "targets": ["q_proj"]})
put("adapter", "lora.safetensors", safetensors({
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": ([1, 4], [0.5, -0.5, 0.25, 1.0]),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": ([4, 1], [0.0, 0.1, 0.2, 0.3]),
}, {"hone.lora_config": config}))

# request: first byte even = chat, odd = text completion.
chat = {"model": "smollm2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "seed": 1, "stop": ["\n"], "stream": True,
        "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2, "n": 1}
put("request", "chat.json", b"\x00" + json.dumps(chat).encode())
put("request", "text.json", b"\x01" + json.dumps({"model": "smollm2:support", "prompt": "Once", "max_tokens": 4, "echo": False}).encode())
put("request", "bad-type.json", b"\x00" + json.dumps({"model": "smollm2", "messages": "hi"}).encode())

# payload: the job catalogue's own valid and invalid examples.
for kind in ("feedback", "task", "document"):
    for verdict in ("valid", "invalid"):
        folder = os.path.join(root, "../../jobs", kind, verdict)
        for name in sorted(os.listdir(folder)):
            shutil.copy(os.path.join(folder, name), os.path.join(root, "payload", f"{kind}-{verdict}-{name}"))

# schema: schema, NUL, instance.
schema = {"type": "object", "required": ["city", "temp"], "additionalProperties": False,
          "properties": {"city": {"type": "string", "minLength": 1, "pattern": "^[A-Z]"},
                         "temp": {"type": "number", "minimum": -90, "maximum": 60},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}}}
put("schema", "object.json", json.dumps(schema) + "\0" + json.dumps({"city": "Oslo", "temp": 3.5, "tags": ["a"]}))
put("schema", "anyof.json", json.dumps({"anyOf": [{"type": "integer"}, {"const": "x"}]}) + "\0" + "\"y\"")

# tokenizer: text, special tokens, a forged turn, bytes that are not UTF-8.
put("tokenizer", "text.txt", "The capital of France is Paris. 1234 tokens, naïve café 日本語 🙂\n\n  indented")
put("tokenizer", "special.txt", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
put("tokenizer", "bytes.bin", b"\xff\xfe\x00abc\xc3\x28\xe2\x82")
