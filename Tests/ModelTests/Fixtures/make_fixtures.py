#!/usr/bin/env python3
"""Makes the reference fixtures of Tests/ModelTests from the real SmolLM2 GGUF.

Oracles (never committed, only what they print):
  - llama.cpp (llama-cpp-python 0.3.36): tokenization (the authority for the `smollm`
    pre-tokenizer) and its own logits, to measure llama.cpp's error against float32;
  - transformers 5.23 (float32, weights dequantized from the GGUF): reference logits and
    greedy continuations;
  - gguf-py 0.19: dequantized tensor values and a small GGUF with every supported type.

Run:  python make_fixtures.py MODEL.gguf OUT_DIR [--only tokenizer|logits|quants]
The logits of another model file go to OUT_DIR/$HONE_LOGITS_FILE (default logits.json): the
K-quant files of ops/requantize-model are compared as logits-Q4_K_M.json and logits-Q6_K.json.
"""
import json, sys, os, random
import numpy as np

MODEL, OUT = sys.argv[1], sys.argv[2]
ONLY = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--only" else None

def want(part):
    return ONLY is None or ONLY == part

# ---------------------------------------------------------------- tokenizer strings
def tokenizer_strings():
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t\n  x", "a  b", "a   b  ", "  leading", "trailing  ",
        "Hello world", "Hello, world!", "hello\tworld", "line1\nline2\r\nline3", "CRLF\r\n\r\nend",
        "123", "1234567890", "3.14159", "1,000,000", "-42", "+7", "0x1F", "2024-11-22", "12:30pm", "$100.50", "99%",
        "a1b2c3", "x=10;y=20", "version 1.2.3-beta", "phone +1 (555) 123-4567",
        "½", "Ⅻ", "①②③", "٣٤٥", "३", "²³", "¼ cup", "Ⅷ century", "१२३", "᠑", "𝟙𝟚",
        "don't", "I'm", "you're", "we've", "they'll", "she'd", "it's", "DON'T", "O'Neil", "rock 'n' roll", "'s", "''",
        "!!!", "???", "...", "---", "***", "!?!?", "--help", "(a)", "[b]", "{c}", "<d>", "a.b.c", "@user #tag", "~/path/to/file",
        "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "I ❤ NY", "emoji😀inline",
        "你好，世界", "日本語のテキスト", "한국어 텍스트", "中文 and English", "漢字123",
        "café", "cafe\u0301", "naïve", "Ångström", "e\u0301\u0302", "ﬁ ligature", "Straße", "İstanbul", "ǅ", "ΑΒΓ αβγ", "Привет мир",
        "مرحبا بالعالم", "שלום עולם", "नमस्ते", "ภาษาไทย", "Tiếng Việt",
        "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}", "SELECT * FROM t WHERE id = 1;",
        "<html><body class=\"x\">Hi</body></html>", "{\"key\": [1, 2, {\"n\": null}]}", "#include <stdio.h>", "x += y ** 2",
        "```python\nprint('hi')\n```", "    indented code", "a\u00a0b", "zero\u200bwidth", "soft\u00adhyphen", "\u3000ideographic space",
        "<|im_start|>", "<|im_end|>", "<|im_start|>user\nHi<|im_end|>\n", "text <|im_end|> more", "<|endoftext|>",
        "<|im_start|>assistant\n", "not <|special|> token", "<repo_name>x<file_sep>", "<|im_start|><|im_end|>",
        "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "tHiS iS mIxEd",
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" * 50, "ab" * 30, " " * 20 + "x", "\n" * 5, "!" * 17, "1" * 25,
        "Mr. Smith went to Washington.", "e.g. i.e. etc.", "U.S.A.", "Q&A", "AT&T", "R&D", "C++ and C#", "node.js", "foo_bar_baz", "camelCaseName",
        "snake_case_name", "kebab-case-name", "SCREAMING_SNAKE", "path/to/file.txt", "C:\\Windows\\System32", "https://example.com/a?b=c&d=e",
        "user@example.com", "192.168.0.1", "::1", "#ff00ff", "\\n literal", "tab\\tlit", "quote \"inside\"", "single 'quote'",
        "`backtick`", "a|b|c", "^caret$", "%s %d", "\u0000nul", "\u0007bell", "\u001b[31mred\u001b[0m", "\u2028line sep", "\ufeffbom",
        "¿Qué?", "¡Hola!", "«quote»", "„German“", "—em dash—", "–en dash–", "…", "•bullet", "©®™", "€£¥", "°C", "±5", "×÷", "≤≥≠", "∑∫√∞",
        "αβγδε", "ℝ ℕ ℤ", "→ ← ↑ ↓", "♠♥♦♣", "☃", "⌘K", "🙂🙃", "🤖 robots", "Ünïcödé", "ĳ", "Ꭰ", "ᚠᛇᚻ", "𐍈", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    ]
    rng = random.Random(7)
    pieces = ["the", " cat", "123", " ", "\n", "!", "é", "中", "😀", "'s", "  ", "42", "\t", "<|im_end|>", "x"]
    while len(s) < 240:
        s.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return s

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "In 1492, Columbus",
    "Water boils at",
    "Q: What is the largest planet?\nA:",
    "List: apples, bananas,",
    "你好，",
    "The sum of 17 and 25 is",
]
SAMPLE_INDICES = sorted(random.Random(11).sample(range(49152), 256))

os.makedirs(OUT, exist_ok=True)

if want("tokenizer") or want("logits"):
    from llama_cpp import Llama
    llm_vocab = Llama(model_path=MODEL, vocab_only=True, verbose=False)

def cpp_tokens(text):
    return llm_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)

if want("tokenizer"):
    with open(os.path.join(OUT, "tokenizer.jsonl"), "w") as f:
        for text in tokenizer_strings():
            f.write(json.dumps({"text": text, "ids": cpp_tokens(text)}, ensure_ascii=False) + "\n")

if want("logits"):
    import torch
    from transformers import AutoModelForCausalLM
    from llama_cpp import Llama
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(MODEL), gguf_file=os.path.basename(MODEL), torch_dtype=torch.float32)
    hf.eval()
    cpp = Llama(model_path=MODEL, n_ctx=512, logits_all=True, n_threads=2, verbose=False)
    records = []
    cpp_abs, cpp_agree, cpp_total = 0.0, 0, 0
    for prompt in PROMPTS:
        ids = cpp_tokens(prompt)
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0].numpy()
            gen = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                              output_scores=True, return_dict_in_generate=True, pad_token_id=2)
        cont = gen.sequences[0][len(ids):].tolist()
        margins = []
        for sc in gen.scores:
            top2 = torch.topk(sc[0], 2).values
            margins.append(float(top2[0] - top2[1]))
        cpp.reset()
        cpp.eval(ids)
        cl = np.array(cpp.scores[: len(ids)], dtype=np.float32)
        cpp_abs += float(np.abs(cl - logits).mean()) * len(ids)
        cpp_agree += int((cl.argmax(-1) == logits.argmax(-1)).sum())
        cpp_total += len(ids)
        positions = []
        for row in logits:
            top = np.argsort(-row)[:20]
            positions.append({"top": [[int(i), float(row[i])] for i in top],
                              "sample": [float(row[i]) for i in SAMPLE_INDICES],
                              "mean": float(row.mean()), "std": float(row.std())})
        records.append({"prompt": prompt, "ids": ids, "positions": positions,
                        "greedy": cont, "greedy_margins": margins})
    with open(os.path.join(OUT, os.environ.get("HONE_LOGITS_FILE", "logits.json")), "w") as f:
        import hashlib
        sha = hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
        json.dump({"model_sha256": sha, "sample_indices": SAMPLE_INDICES, "prompts": records,
                   "llamacpp_mean_abs_diff": cpp_abs / cpp_total,
                   "llamacpp_top1_agreement": cpp_agree / cpp_total}, f)

if want("quants"):
    import gguf
    from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as Q
    from gguf.quants import quantize, dequantize
    reader = GGUFReader(MODEL)
    real = {}
    for t in reader.tensors:
        if t.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight", "blk.29.ffn_down.weight"):
            values = dequantize(t.data, t.tensor_type).reshape(-1)
            real[t.name] = {"type": int(t.tensor_type), "first": [float(v) for v in values[:64]],
                            "last": [float(v) for v in values[-64:]], "sum": float(values.astype(np.float64).sum())}
    rng = np.random.default_rng(3)
    path = os.path.join(OUT, "types.gguf")
    w = GGUFWriter(path, "llama")
    expected = {}
    for name, qt in [("f32", Q.F32), ("f16", Q.F16), ("bf16", Q.BF16), ("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1)]:
        x = (rng.standard_normal((4, 64)) * 0.5).astype(np.float32)
        data = quantize(x, qt)
        w.add_tensor(name, data, raw_dtype=qt)
        expected[name] = [float(v) for v in dequantize(data, qt).reshape(-1)]
    for name, qt in [("q5_0", Q.Q5_0), ("q5_1", Q.Q5_1)]:
        x = (rng.standard_normal((4, 64)) * 0.5).astype(np.float32)
        data = quantize(x, qt)
        w.add_tensor(name, data, raw_dtype=qt)
        expected[name] = [float(v) for v in dequantize(data, qt).reshape(-1)]
    # gguf-py cannot quantize to K-quants: random blocks (sane fp16 scales, every other bit
    # random) are dequantized instead. Two rows of two super-blocks each.
    def half(values):
        return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(len(values), 2)
    for name, qt, size in [("q4_k", Q.Q4_K, 144), ("q5_k", Q.Q5_K, 176), ("q6_k", Q.Q6_K, 210)]:
        blocks = rng.integers(0, 256, size=(4, size), dtype=np.uint8)
        d = half(rng.uniform(0.0005, 0.02, 4))
        if qt == Q.Q6_K:
            blocks[:, 208:210] = d
        else:
            blocks[:, 0:2] = d
            blocks[:, 2:4] = half(rng.uniform(0.0005, 0.02, 4))
        data = blocks.reshape(2, 2 * size)
        w.add_tensor(name, data, raw_dtype=qt)
        expected[name] = [float(v) for v in dequantize(data, qt).reshape(-1)]
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with open(os.path.join(OUT, "quants.json"), "w") as f:
        json.dump({"real_model": real, "types_gguf": expected}, f)
