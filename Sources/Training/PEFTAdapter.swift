import Foundation
import JSON
import Llama

/// PEFT's on-disk form of a LoRA adapter: `adapter_model.safetensors` with tensors named
/// `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (A: (R, in), B: (out, R))
/// and `adapter_config.json`. A Hone adapter saved here loads in PEFT and back.
public enum PEFTAdapter {
    /// The weights' file name in an adapter directory.
    public static let weightsFile = "adapter_model.safetensors"
    /// The settings' file name in an adapter directory.
    public static let configFile = "adapter_config.json"
    /// safetensors metadata key holding the base model file's SHA-256.
    public static let baseModelKey = "hone.base_model_sha256"

    /// Writes the two files into `directory` (created if missing).
    public static func write(_ adapter: LoRAAdapter, to directory: String, model: LlamaModel, baseModelName: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try weights(adapter, model: model).write(to: directory + "/" + weightsFile)
        try Data(config(adapter.config, baseModelName: baseModelName).jsonText.utf8)
            .write(to: URL(fileURLWithPath: directory + "/" + configFile))
    }

    /// The weights file: tensors in PEFT's names and row order, with the base model's
    /// SHA-256 and the LoRA settings in its metadata, so the file alone (a registry blob)
    /// says what it fits.
    public static func weights(_ adapter: LoRAAdapter, model: LlamaModel) -> SafeTensors {
        let cfg = model.config
        var file = SafeTensors(metadata: [
            "format": "pt", baseModelKey: model.file.sha256,
            loraConfigKey: String(decoding: try! JSONEncoder().encode(adapter.config), as: UTF8.self),
        ])
        for key in adapter.keys {
            let w = adapter.weights[key]!
            let (out, inWidth) = key.target.shape(cfg)
            let r = adapter.config.rank
            file.tensors[tensorName(key, "A")] = .init(shape: [r, inWidth], values: w.a)
            file.tensors[tensorName(key, "B")] = .init(shape: [out, r], values: permuteRows(w.b, key.target, cfg, toHF: true, columns: r))
        }
        return file
    }

    /// safetensors metadata key holding the LoRA settings (rank, alpha, targets) as JSON.
    public static let loraConfigKey = "hone.lora_config"

    /// `adapter_config.json` for these settings.
    public static func config(_ config: LoRAConfig, baseModelName: String) -> JSONValue {
        .object([
            "peft_type": .string("LORA"),
            "task_type": .string("CAUSAL_LM"),
            "base_model_name_or_path": .string(baseModelName),
            "r": .int(config.rank),
            "lora_alpha": .double(Double(config.alpha)),
            "target_modules": .array(config.targets.map { .string($0.rawValue) }),
            "lora_dropout": .double(0),
            "bias": .string("none"),
            "fan_in_fan_out": .bool(false),
            "inference_mode": .bool(true),
            "init_lora_weights": .bool(true),
            "use_rslora": .bool(false),
            "use_dora": .bool(false),
            "modules_to_save": .null,
            "layers_to_transform": .null,
            "rank_pattern": .object([:]),
            "alpha_pattern": .object([:]),
        ])
    }

    /// Reads an adapter from `directory` for `model`, refusing (with the reason) anything
    /// that does not fit it: another base model, missing or extra tensors, wrong shapes or
    /// rank, or PEFT options Hone does not implement.
    public static func read(from directory: String, model: LlamaModel) throws -> LoRAAdapter {
        let configPath = directory + "/" + configFile
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw TrainingError("\(configPath) is missing: not a PEFT adapter directory")
        }
        let json = try JSONValue(parsing: data)
        func refuse(_ why: String) -> TrainingError { TrainingError("adapter \(directory): \(why)") }
        guard json["peft_type"]?.stringValue == "LORA" else { throw refuse("peft_type is not LORA") }
        guard let rank = json["r"]?.intValue, rank > 0 else { throw refuse("r (the rank) is missing or not positive") }
        guard let alpha = json["lora_alpha"]?.doubleValue else { throw refuse("lora_alpha is missing") }
        for flag in ["use_rslora", "use_dora", "fan_in_fan_out"] where json[flag] == .bool(true) {
            throw refuse("\(flag) is set; Hone implements plain LoRA only")
        }
        if let bias = json["bias"]?.stringValue, bias != "none" { throw refuse("bias \"\(bias)\" is not supported (only none)") }
        for key in ["rank_pattern", "alpha_pattern"] {
            if case .object(let o)? = json[key], !o.isEmpty { throw refuse("\(key) is not supported") }
        }
        if let layers = json["layers_to_transform"], layers != .null { throw refuse("layers_to_transform is not supported") }
        guard let names = json["target_modules"]?.arrayValue?.compactMap(\.stringValue) else {
            throw refuse("target_modules must be a list of module names")
        }
        var targets: [LoRATarget] = []
        for name in names {
            guard let t = LoRATarget(rawValue: name) else {
                throw refuse("target module \(name) is not one of \(LoRATarget.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            targets.append(t)
        }
        let file = try SafeTensors(path: directory + "/" + weightsFile)
        return try adapter(from: file, config: LoRAConfig(rank: rank, alpha: Float(alpha), targets: targets),
                           model: model, source: "adapter \(directory)")
    }

    /// Reads a weights file that carries its settings in its metadata (what `weights`
    /// writes; the registry's blobs).
    public static func read(weights file: SafeTensors, model: LlamaModel, source: String) throws -> LoRAAdapter {
        guard let text = file.metadata[loraConfigKey],
              let config = try? JSONDecoder().decode(LoRAConfig.self, from: Data(text.utf8)) else {
            throw TrainingError("\(source): the metadata lacks \(loraConfigKey) (rank, alpha, targets)")
        }
        return try adapter(from: file, config: config, model: model, source: source)
    }

    /// The adapter held in `file` for `config`, checked against `model`.
    static func adapter(from file: SafeTensors, config: LoRAConfig, model: LlamaModel, source: String) throws -> LoRAAdapter {
        func refuse(_ why: String) -> TrainingError { TrainingError("\(source): \(why)") }
        if let base = file.metadata[baseModelKey], base != model.file.sha256 {
            throw refuse("it was trained on base model \(base.prefix(12))…, not this model (\(model.file.sha256.prefix(12))…)")
        }
        let cfg = model.config, rank = config.rank
        var adapter = LoRAAdapter.zeros(config: config, model: cfg)
        var unused = Set(file.tensors.keys)
        for key in adapter.keys {
            let (out, inWidth) = key.target.shape(cfg)
            for (part, shape) in [("A", [rank, inWidth]), ("B", [out, rank])] {
                let name = tensorName(key, part)
                guard let t = file.tensors[name] else { throw refuse("tensor \(name) is missing") }
                guard t.shape == shape else { throw refuse("tensor \(name) has shape \(t.shape); this model and rank \(rank) need \(shape)") }
                unused.remove(name)
                if part == "A" {
                    adapter.weights[key]!.a = t.values
                } else {
                    adapter.weights[key]!.b = permuteRows(t.values, key.target, cfg, toHF: false, columns: rank)
                }
            }
        }
        if let extra = unused.sorted().first { throw refuse("tensor \(extra) does not belong to a \(cfg.layers)-layer model with these targets") }
        guard adapter.isFinite else { throw refuse("it holds NaN or infinite values") }
        return adapter
    }

    /// `base_model.model.model.layers.{i}.{module}.lora_{A|B}.weight`
    static func tensorName(_ key: LoRAKey, _ part: String) -> String {
        "base_model.model.model.layers.\(key.layer).\(key.target.modulePath).lora_\(part).weight"
    }

    /// Llama GGUFs store q and k rows in llama.cpp's RoPE order: within each head, row 2i + j
    /// is Hugging Face's row j · D/2 + i. B's rows (outputs) follow their weight's order, so
    /// they are permuted on the way to and from PEFT; other targets, and Qwen2 (whose GGUF
    /// keeps Hugging Face's order), pass through.
    static func permuteRows(_ b: [Float], _ target: LoRATarget, _ cfg: LlamaConfig, toHF: Bool, columns: Int) -> [Float] {
        guard cfg.architecture == .llama, target == .q || target == .k else { return b }
        let d = cfg.headDim, heads = target == .q ? cfg.heads : cfg.kvHeads
        var out = b
        for h in 0..<heads {
            for i in 0..<(d / 2) {
                for j in 0..<2 {
                    let gguf = h * d + 2 * i + j, hf = h * d + j * (d / 2) + i
                    let (src, dst) = toHF ? (gguf, hf) : (hf, gguf)
                    for c in 0..<columns { out[dst * columns + c] = b[src * columns + c] }
                }
            }
        }
        return out
    }
}
