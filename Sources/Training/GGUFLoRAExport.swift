import GGUF
import Llama

/// llama.cpp's GGUF LoRA adapter format (what `convert_lora_to_gguf.py` writes and
/// `--lora` loads): `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`,
/// and per adapted weight `blk.{i}.attn_q.weight.lora_a` (ne [in, R]) and `….lora_b`
/// (ne [R, out]), float32. Rows stay in GGUF order, so nothing is permuted.
public enum GGUFLoRAExport {
    /// Writes `adapter` (trained on `model`) as a GGUF LoRA file at `path`.
    public static func write(_ adapter: LoRAAdapter, to path: String, model: LlamaModel) throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string(model.config.architecture.rawValue))
        w.set("general.type", .string("adapter"))
        w.set("general.name", .string("hone-lora"))
        w.set("adapter.type", .string("lora"))
        w.set("adapter.lora.alpha", .float32(adapter.config.alpha))
        w.set("hone.base_model_sha256", .string(model.file.sha256))
        for key in adapter.keys {
            let (out, inWidth) = key.target.shape(model.config)
            let r = adapter.config.rank
            let base = key.target.tensor(layer: key.layer).name
            w.addTensor(base + ".lora_a", dims: [inWidth, r], type: .f32, values: adapter.weights[key]!.a)
            w.addTensor(base + ".lora_b", dims: [r, out], type: .f32, values: adapter.weights[key]!.b)
        }
        try w.write(to: path)
    }
}
