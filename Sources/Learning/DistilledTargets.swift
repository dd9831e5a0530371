import Llama
import Tensor

/// A set of the learner's reference sequences (the anchors, the locality set) whose
/// answers get the base model's distributions as targets.
public protocol DistilledSet {
    /// The sequences that get targets, in a fixed order.
    var distillationInputs: [TrainingSequence] { get }
    /// Takes `distillationInputs` with their targets set.
    mutating func setDistilled(_ sequences: [TrainingSequence])
}

extension DistilledSet {
    /// Gives every answer position the base model's distribution (its 32 most likely tokens,
    /// renormalized) as its target: from `stored` (what `DistilledTargets.encode` wrote for
    /// these inputs) when it fits, else by forward passes. Returns the bytes to store when
    /// it distilled, nil when it read them.
    public mutating func distill(model: LlamaModel, stored: [UInt8]? = nil) throws -> [UInt8]? {
        if let stored, let sequences = DistilledTargets.decode(stored, onto: distillationInputs) {
            setDistilled(sequences)
            return nil
        }
        setDistilled(try AnchorSet.distilled(distillationInputs, model: model))
        return DistilledTargets.encode(distillationInputs)
    }
}

/// The base model's distilled targets of a set of sequences, as bytes: a learner distils
/// the anchor and locality sets whenever it starts (~230 sequences of forward passes:
/// 20–40 s on two cores), so the first one stores them and every later start, on any
/// replica, reads them back instead.
public enum DistilledTargets {
    /// What identifies the distillation's input: every sequence's tokens and loss mask, in
    /// order. A learner hashes it (with the base model's sha256) to name the stored targets.
    public static func inputBytes(_ sequences: [TrainingSequence]) -> [UInt8] {
        var out: [UInt8] = []
        append(UInt32(sequences.count), to: &out)
        for seq in sequences {
            append(UInt32(seq.tokens.count), to: &out)
            for (token, counted) in zip(seq.tokens, seq.lossMask) { append(UInt32(token) | (counted ? 1 << 31 : 0), to: &out) }
        }
        return out
    }

    /// The soft targets of `sequences`: per sequence its positions, each with its tokens and
    /// probabilities (little-endian UInt32 and Float32).
    public static func encode(_ sequences: [TrainingSequence]) -> [UInt8] {
        var out: [UInt8] = []
        append(UInt32(sequences.count), to: &out)
        for seq in sequences {
            append(UInt32(seq.softTargets.count), to: &out)
            for (position, target) in seq.softTargets.sorted(by: { $0.key < $1.key }) {
                append(UInt32(position), to: &out)
                append(UInt32(target.tokens.count), to: &out)
                for token in target.tokens { append(UInt32(token), to: &out) }
                for p in target.probabilities { append(p.bitPattern, to: &out) }
            }
        }
        return out
    }

    /// `sequences` with the targets `encode` wrote for them, or nil when the bytes do not
    /// fit (truncated, another set, a position outside a sequence).
    public static func decode(_ bytes: [UInt8], onto sequences: [TrainingSequence]) -> [TrainingSequence]? {
        var reader = Reader(bytes: bytes)
        guard let count = reader.next(), Int(count) == sequences.count else { return nil }
        var out = sequences
        for i in out.indices {
            guard let positions = reader.next() else { return nil }
            var targets: [Int: SoftTarget] = [:]
            for _ in 0..<positions {
                guard let position = reader.next(), Int(position) < out[i].tokens.count,
                      let k = reader.next(), k <= 4096 else { return nil }
                var tokens: [Int] = [], probabilities: [Float] = []
                for _ in 0..<k { guard let t = reader.next() else { return nil }; tokens.append(Int(t)) }
                for _ in 0..<k { guard let p = reader.next() else { return nil }; probabilities.append(Float(bitPattern: p)) }
                targets[Int(position)] = SoftTarget(tokens: tokens, probabilities: probabilities)
            }
            out[i].softTargets = targets
        }
        return reader.atEnd ? out : nil
    }

    private static func append(_ value: UInt32, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0
        var atEnd: Bool { offset == bytes.count }
        mutating func next() -> UInt32? {
            guard offset + 4 <= bytes.count else { return nil }
            defer { offset += 4 }
            return UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
        }
    }
}
