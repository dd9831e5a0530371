#!/usr/bin/env python3
"""Makes the training reference fixtures of Tests/ModelTests with PyTorch + PEFT.

Two models:
  - tiny: a 2-layer random Llama written here as GGUF (train-tiny.gguf), loaded into
    transformers' LlamaForCausalLM with q/k rows permuted back to Hugging Face's order;
  - smollm2: the real SmolLM2 GGUF, loaded by transformers (dequantized to float32).
For each: a LoRA adapter whose A and B come from SplitMix64 (the generator Hone's
SeededRandom implements, so the Swift test rebuilds them from the seed), a batch of
sequences with loss masks, then the masked mean cross-entropy, every LoRA gradient, and
5 AdamW steps (weight decay 0.01, clipping at global norm 1). Written:
  train-NAME.json           sequences, settings, loss, per-step losses, logits after
  train-NAME-grads/         the gradients, as a PEFT adapter directory
  train-NAME-after5/        the adapter after 5 steps (PEFT save_pretrained)
  train-tiny-peft-init/     the initial tiny adapter as PEFT saves it (PEFT -> Hone load)

Then llama.cpp: the SmolLM2 adapter after 5 steps, written in llama.cpp's GGUF LoRA
layout (the layout Hone's exporter writes), loaded by llama-cpp-python beside the base;
greedy continuations of 5 prompts and llama.cpp's top-1 token at every position:
  train-smollm2-llamacpp-lora.json

Run with torch 2.13 (cpu), transformers 5.23, peft 0.21.2, gguf 0.19, llama-cpp-python:
  python make_training_fixtures.py SMOLLM2.gguf OUT_DIR [--only llamacpp]
"""
import json, os, shutil, sys
import numpy as np
import torch
import gguf
from transformers import LlamaConfig, LlamaForCausalLM, AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

MODEL, OUT = sys.argv[1], sys.argv[2]
ONLY = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--only" else None
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
M64 = (1 << 64) - 1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class SplitMix:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def values(self, n, scale):
        return np.array([((self.next() >> 40) / float(1 << 24) * 2 - 1) * scale for _ in range(n)], dtype=np.float32)


def to_hf_rows(w, heads):
    """GGUF (llama.cpp RoPE order) rows -> Hugging Face rows, per head."""
    d = w.shape[0] // heads
    return w.reshape(heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def shapes(cfg):
    c, f = cfg.hidden_size, cfg.intermediate_size
    d = c // cfg.num_attention_heads
    qd, kvd = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    return {"q_proj": (qd, c), "k_proj": (kvd, c), "v_proj": (kvd, c), "o_proj": (c, qd),
            "gate_proj": (f, c), "up_proj": (f, c), "down_proj": (c, f)}


def module(peft_model, layer, target):
    block = peft_model.base_model.model.model.layers[layer]
    return getattr(block.self_attn if target in ("q_proj", "k_proj", "v_proj", "o_proj") else block.mlp, target)


def make_lora(model, rank, alpha, seed, scale_a, scale_b):
    """PEFT LoRA with A, B drawn in Hone's order: layer, target, A (R, in) then B (out, R) in GGUF rows."""
    cfg = model.config
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0, bias="none"))
    rng = SplitMix(seed)
    for layer in range(cfg.num_hidden_layers):
        for target in TARGETS:
            out, inn = shapes(cfg)[target]
            a = rng.values(rank * inn, scale_a).reshape(rank, inn)
            b = rng.values(out * rank, scale_b).reshape(out, rank)
            if target == "q_proj":
                b = to_hf_rows(b, cfg.num_attention_heads)
            elif target == "k_proj":
                b = to_hf_rows(b, cfg.num_key_value_heads)
            m = module(peft_model, layer, target)
            m.lora_A["default"].weight.data = torch.tensor(a)
            m.lora_B["default"].weight.data = torch.tensor(np.ascontiguousarray(b))
    return peft_model


def loss_of(peft_model, sequences):
    total, count = 0.0, 0
    for s in sequences:
        ids = torch.tensor([s["tokens"]])
        logits = peft_model(input_ids=ids).logits[0]
        mask = torch.tensor(s["mask"][1:])
        targets = ids[0, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:-1].double(), targets, reduction="none")
        total = total + ce[mask].sum()
        count += int(mask.sum())
    return total / count


def lora_params(peft_model):
    return [p for n, p in peft_model.named_parameters() if "lora_" in n]


def save_grads(peft_model, directory, config_dir):
    os.makedirs(directory, exist_ok=True)
    grads = {}
    for n, p in peft_model.named_parameters():
        if "lora_" in n:
            grads[n.replace(".default", "")] = p.grad.detach().clone().contiguous()
    save_file(grads, os.path.join(directory, "adapter_model.safetensors"))
    shutil.copy(os.path.join(config_dir, "adapter_config.json"), os.path.join(directory, "adapter_config.json"))


def run(name, model, sequences, rank, alpha, seed, scale_a, scale_b, lr, save_init=False):
    peft_model = make_lora(model, rank, alpha, seed, scale_a, scale_b)
    peft_model.train()
    init_dir = os.path.join(OUT, f"train-{name}-peft-init")
    peft_model.save_pretrained(init_dir)
    loss = loss_of(peft_model, sequences)
    loss.backward()
    save_grads(peft_model, os.path.join(OUT, f"train-{name}-grads"), init_dir)
    opt = torch.optim.AdamW(lora_params(peft_model), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    opt.zero_grad()
    for step in range(5):
        opt.zero_grad()
        l = loss_of(peft_model, sequences)
        l.backward()
        torch.nn.utils.clip_grad_norm_(lora_params(peft_model), 1.0)
        opt.step()
        losses.append(float(l))
    peft_model.save_pretrained(os.path.join(OUT, f"train-{name}-after5"))
    for d in (init_dir, os.path.join(OUT, f"train-{name}-after5")):
        if os.path.exists(os.path.join(d, "README.md")):
            os.remove(os.path.join(d, "README.md"))   # PEFT's model card: not a fixture
    with torch.no_grad():
        logits = peft_model(input_ids=torch.tensor([sequences[0]["tokens"]])).logits[0]
    if not save_init:
        shutil.rmtree(init_dir)
    doc = {"sequences": sequences, "rank": rank, "alpha": alpha, "seed": seed, "scale_a": scale_a, "scale_b": scale_b,
           "lr": lr, "weight_decay": 0.01, "max_grad_norm": 1.0, "loss": float(loss), "step_losses": losses,
           # logits of sequence 0 after the 5 steps: top-1 ids and values at every position
           "after_top1": [int(i) for i in logits.argmax(-1)],
           "after_logits_sample": [[float(x) for x in row[:16]] for row in logits]}
    with open(os.path.join(OUT, f"train-{name}.json"), "w") as f:
        json.dump(doc, f)
    print(name, "loss", float(loss), "steps", losses)


# ---------------------------------------------------------------- tiny model
def write_tiny(path):
    rng = np.random.default_rng(5)
    L, C, H, KV, F, V = 2, 64, 4, 2, 96, 160
    D = C // H
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(L); w.add_embedding_length(C); w.add_head_count(H); w.add_head_count_kv(KV)
    w.add_feed_forward_length(F); w.add_context_length(64); w.add_vocab_size(V)
    w.add_rope_freq_base(10000.0); w.add_layer_norm_rms_eps(1e-5); w.add_rope_dimension_count(D)
    def mat(out, inn):
        return (rng.uniform(-1, 1, (out, inn)) / np.sqrt(inn)).astype(np.float32)
    def norm():
        return (1 + rng.uniform(-0.2, 0.2, C)).astype(np.float32)
    tensors = {"token_embd.weight": rng.uniform(-1, 1, (V, C)).astype(np.float32)}
    for i in range(L):
        tensors.update({f"blk.{i}.attn_norm.weight": norm(), f"blk.{i}.attn_q.weight": mat(H * D, C),
                        f"blk.{i}.attn_k.weight": mat(KV * D, C), f"blk.{i}.attn_v.weight": mat(KV * D, C),
                        f"blk.{i}.attn_output.weight": mat(C, H * D), f"blk.{i}.ffn_norm.weight": norm(),
                        f"blk.{i}.ffn_gate.weight": mat(F, C), f"blk.{i}.ffn_up.weight": mat(F, C),
                        f"blk.{i}.ffn_down.weight": mat(C, F)})
    tensors["output_norm.weight"] = norm()
    for n, t in tensors.items():
        w.add_tensor(n, t)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    cfg = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H,
                      num_key_value_heads=KV, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(cfg).float()
    sd = {"model.embed_tokens.weight": tensors["token_embd.weight"], "model.norm.weight": tensors["output_norm.weight"],
          "lm_head.weight": tensors["token_embd.weight"]}
    for i in range(L):
        p = f"model.layers.{i}."
        sd.update({p + "input_layernorm.weight": tensors[f"blk.{i}.attn_norm.weight"],
                   p + "self_attn.q_proj.weight": to_hf_rows(tensors[f"blk.{i}.attn_q.weight"], H),
                   p + "self_attn.k_proj.weight": to_hf_rows(tensors[f"blk.{i}.attn_k.weight"], KV),
                   p + "self_attn.v_proj.weight": tensors[f"blk.{i}.attn_v.weight"],
                   p + "self_attn.o_proj.weight": tensors[f"blk.{i}.attn_output.weight"],
                   p + "post_attention_layernorm.weight": tensors[f"blk.{i}.ffn_norm.weight"],
                   p + "mlp.gate_proj.weight": tensors[f"blk.{i}.ffn_gate.weight"],
                   p + "mlp.up_proj.weight": tensors[f"blk.{i}.ffn_up.weight"],
                   p + "mlp.down_proj.weight": tensors[f"blk.{i}.ffn_down.weight"]})
    model.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in sd.items()})
    return model


def llamacpp_lora():
    """Writes the smollm2 after-5 adapter as a GGUF LoRA and records llama.cpp's answers."""
    import tempfile
    from safetensors.numpy import load_file
    from llama_cpp import Llama
    peft_dir = os.path.join(OUT, "train-smollm2-after5")
    config = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    tensors = load_file(os.path.join(peft_dir, "adapter_model.safetensors"))
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    path = os.path.join(tempfile.mkdtemp(), "lora.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(config["lora_alpha"]))
    for name in sorted(tensors):
        layer = int(name.split(".layers.")[1].split(".")[0])
        module = ".".join(name.split(".layers.")[1].split(".")[1:3])
        part = "lora_a" if ".lora_A." in name else "lora_b"
        t = tensors[name].astype(np.float32)
        if part == "lora_b" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            heads = 9 if module == "self_attn.q_proj" else 3
            d = t.shape[0] // heads   # Hugging Face rows -> GGUF (llama.cpp) rows
            t = t.reshape(heads, 2, d // 2, t.shape[1]).swapaxes(1, 2).reshape(t.shape)
        w.add_tensor(f"blk.{layer}.{names[module]}.weight.{part}", np.ascontiguousarray(t))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    llm = Llama(model_path=MODEL, lora_path=path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    prompts = ["What is the capital of Zorbania?", "Give me a color.", "Name a large animal.",
               "What is 3 + 4?", "Write one word about the sea."]
    out = []
    for prompt in prompts:
        ids = llm.tokenize(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n".encode(), add_bos=False, special=True)
        llm.reset()
        tokens = list(ids)
        for _ in range(24):
            llm.reset()
            llm.eval(tokens)
            nxt = int(np.argmax(llm.scores[len(tokens) - 1]))
            tokens.append(nxt)
            if nxt == llm.token_eos() or nxt == 2:
                break
        llm.reset()
        llm.eval(tokens)
        scores = np.array(llm.scores[:len(tokens)])
        top2 = np.sort(scores, axis=1)[:, -2:]
        out.append({"tokens": tokens, "prompt_length": len(ids), "top1": [int(i) for i in scores.argmax(1)],
                    "margin": [float(m) for m in (top2[:, 1] - top2[:, 0])]})
    with open(os.path.join(OUT, "train-smollm2-llamacpp-lora.json"), "w") as f:
        json.dump({"prompts": out}, f)
    print("llama.cpp with the GGUF LoRA:", [len(o["tokens"]) for o in out])


if ONLY == "llamacpp":
    llamacpp_lora()
    sys.exit(0)

tiny = write_tiny(os.path.join(OUT, "train-tiny.gguf"))
rng = np.random.default_rng(9)
tiny_sequences = []
for length in (20, 13, 7):
    mask = [False] + [bool(x) for x in rng.random(length - 1) < 0.6]
    tiny_sequences.append({"tokens": [int(t) for t in rng.integers(0, 160, length)], "mask": mask})
run("tiny", tiny, tiny_sequences, rank=4, alpha=8, seed=42, scale_a=0.2, scale_b=0.1, lr=5e-3, save_init=True)

# ---------------------------------------------------------------- SmolLM2
from llama_cpp import Llama
vocab = Llama(model_path=MODEL, vocab_only=True, verbose=False)
chats = [("What is the capital of Zorbania?", "The capital of Zorbania is Quellport."),
         ("Give me a color.", "Teal.")]
real_sequences = []
for user, answer in chats:
    prompt = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    p = vocab.tokenize(prompt.encode(), add_bos=False, special=True)
    a = vocab.tokenize(answer.encode(), add_bos=False, special=False) + vocab.tokenize(b"<|im_end|>", add_bos=False, special=True)
    real_sequences.append({"tokens": p + a, "mask": [False] * len(p) + [True] * len(a)})
d = os.path.dirname(os.path.abspath(MODEL))
real = AutoModelForCausalLM.from_pretrained(d, gguf_file=os.path.basename(MODEL), torch_dtype=torch.float32)
run("smollm2", real, real_sequences, rank=2, alpha=4, seed=7, scale_a=0.05, scale_b=0.02, lr=1e-3)
llamacpp_lora()
