#!/usr/bin/env python3
"""llama.cpp's token ids for the tokenizer strings of make_fixtures.py under the Llama 3
(`llama-bpe`) and Qwen2 (`qwen2`) pre-tokenizers: SmolLM2's vocabulary and merges in a
vocab-only GGUF whose `tokenizer.ggml.pre` names the other pre-tokenizer, so only the
splitting differs from tokenizer.jsonl. TokenizerTests writes the same file with Hone's
GGUF writer.

Run:  python make_pretokenizer_fixtures.py MODEL.gguf OUT_DIR
Writes OUT_DIR/tokenizer-llama-bpe.jsonl and OUT_DIR/tokenizer-qwen2.jsonl.
"""
import json, os, random, sys, tempfile
import gguf
from llama_cpp import Llama

MODEL, OUT = sys.argv[1], sys.argv[2]
# make_fixtures.py runs on import; only its string list is wanted, so take that function.
source = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_fixtures.py")).read()
namespace = {}
exec(source[source.index("def tokenizer_strings"):source.index("PROMPTS = [")], {"random": random}, namespace)
strings = namespace["tokenizer_strings"]()

reader = gguf.GGUFReader(MODEL)
for pre in ["llama-bpe", "qwen2"]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vocab.gguf")
        writer = gguf.GGUFWriter(path, reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            value = pre if field.name == "tokenizer.ggml.pre" else field.contents()
            writer.add_key_value(field.name, value, kind, sub_type=sub)
        writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        with open(os.path.join(OUT, f"tokenizer-{pre}.jsonl"), "w") as f:
            for text in strings:
                ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
                f.write(json.dumps({"text": text, "ids": ids}, ensure_ascii=False) + "\n")
    print(pre, len(strings), file=sys.stderr)
