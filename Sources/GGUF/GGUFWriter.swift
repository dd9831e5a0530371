import CKernels
import Foundation

/// Writes GGUF v3 files: the tests' tiny random models and, later, LoRA exports.
public struct GGUFWriter {
    private var metadata: [(String, GGUFValue)] = []
    private var tensors: [(name: String, dims: [Int], type: GGMLType, bytes: [UInt8])] = []
    public let alignment = 32

    public init() {}

    /// A writer that starts with every metadata entry of `file`, in its order (no tensors):
    /// the tests' variants of a real model (re-quantized, another pre-tokenizer).
    public init(metadataOf file: GGUFFile) {
        metadata = file.metadataKeys.map { ($0, file.metadata[$0]!) }
    }

    /// Adds a metadata entry (kept in insertion order).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        metadata.removeAll { $0.0 == key }
        metadata.append((key, value))
    }

    /// Adds a tensor from float32 values, stored as `type` (quantized with ggml's rounding).
    /// `dims` are fastest-varying first, like ggml's `ne`.
    public mutating func addTensor(_ name: String, dims: [Int], type: GGMLType, values: [Float]) {
        precondition(values.count == dims.reduce(1, *), "\(name): \(values.count) values for shape \(dims)")
        precondition(dims[0] % type.blockSize == 0, "\(name): row length must be a multiple of \(type.blockSize)")
        var bytes = [UInt8](repeating: 0, count: type.bytes(for: values.count))
        let status = values.withUnsafeBufferPointer { src in
            bytes.withUnsafeMutableBytes { dst in
                hone_quantize(Int32(type.rawValue), src.baseAddress, dst.baseAddress, values.count)
            }
        }
        precondition(status == 0, "every GGMLType case has a quantizer")
        tensors.append((name, dims, type, bytes))
    }

    /// The file's bytes.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .float64(let x): u64(x.bitPattern)
            case .bool(let b): out.append(b ? 1 : 0)
            case .string(let s): string(s)
            case .array(let type, let items):
                u32(type)
                u64(UInt64(items.count))
                for item in items { value(item) }
            }
        }
        u32(0x4655_4747)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(v.typeID)
            value(v)
        }
        var offset = 0
        for t in tensors {
            string(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out.append(contentsOf: t.bytes)
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// Writes the file to `path`.
    public func write(to path: String) throws {
        try Data(serialized()).write(to: URL(fileURLWithPath: path))
    }
}
