import Hashing
import Llama

/// An adapter version's bytes as stored in `hone.model_versions.blob`: PEFT's
/// `adapter_model.safetensors`, carrying the LoRA settings and the base model's SHA-256 in
/// its metadata, so a blob alone says what it fits and exports as it is.
public enum AdapterBlob {
    /// The blob of `adapter` and its SHA-256 (hex).
    public static func encode(_ adapter: LoRAAdapter, model: LlamaModel) -> (bytes: [UInt8], sha256: String) {
        let bytes = PEFTAdapter.weights(adapter, model: model).serialized()
        return (bytes, sha256Hex(bytes))
    }

    /// The adapter in `bytes`, after checking them against the recorded SHA-256 and the
    /// model (shapes, rank, base model, finite values); throws with the reason.
    public static func decode(_ bytes: [UInt8], sha256 expected: String, model: LlamaModel, source: String) throws -> LoRAAdapter {
        let actual = sha256Hex(bytes)
        guard actual == expected else {
            throw TrainingError("\(source): the blob's SHA-256 is \(actual.prefix(12))…, the registry recorded \(expected.prefix(12))…; refusing a corrupted adapter")
        }
        return try PEFTAdapter.read(weights: try SafeTensors(bytes: bytes, name: source), model: model, source: source)
    }
}
