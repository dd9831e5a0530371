import CKernels
import Foundation
import JSON

/// A safetensors file (Hugging Face's format): an 8-byte little-endian header length, a
/// JSON header naming each tensor's dtype, shape and byte range, then the raw data.
/// Hone writes float32 and reads F32, F16 and BF16.
public struct SafeTensors: Sendable {
    /// One tensor: its shape (slowest dimension first) and values, as float32.
    public struct Tensor: Sendable, Equatable {
        public var shape: [Int]
        public var values: [Float]
        /// `values` must hold the product of `shape` elements.
        public init(shape: [Int], values: [Float]) {
            precondition(shape.reduce(1, *) == values.count)
            self.shape = shape
            self.values = values
        }
    }

    public var tensors: [String: Tensor]
    /// The header's `__metadata__` (strings only, by the format's rule).
    public var metadata: [String: String]

    public init(tensors: [String: Tensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Reads a file; throws `TrainingError` naming what is wrong with it.
    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TrainingError("cannot read \(path)")
        }
        try self.init(bytes: [UInt8](data), name: path)
    }

    /// Parses a file's bytes (e.g. an adapter blob from the database); `name` goes into errors.
    public init(bytes: [UInt8], name path: String) throws {
        guard bytes.count >= 8 else { throw TrainingError("\(path) is not a safetensors file: \(bytes.count) bytes") }
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard headerLength > 0, 8 + headerLength <= bytes.count else {
            throw TrainingError("\(path): header length \(headerLength) does not fit the file")
        }
        guard case .object(let header)? = try? JSONValue(parsing: Data(bytes[8..<(8 + headerLength)])) else {
            throw TrainingError("\(path): the header is not a JSON object")
        }
        let body = 8 + headerLength
        var tensors: [String: Tensor] = [:], metadata: [String: String] = [:]
        for (name, entry) in header {
            if name == "__metadata__" {
                if case .object(let m) = entry { for (k, v) in m { metadata[k] = v.stringValue ?? v.jsonText } }
                continue
            }
            guard let dtype = entry["dtype"]?.stringValue,
                  let shape = entry["shape"]?.arrayValue?.compactMap(\.intValue),
                  let range = entry["data_offsets"]?.arrayValue?.compactMap(\.intValue), range.count == 2 else {
                throw TrainingError("\(path): tensor \(name) lacks dtype, shape or data_offsets")
            }
            let count = shape.reduce(1, *)
            let width: Int
            switch dtype {
            case "F32": width = 4
            case "F16", "BF16": width = 2
            default: throw TrainingError("\(path): tensor \(name) has dtype \(dtype); Hone reads F32, F16 and BF16")
            }
            guard range[0] >= 0, range[1] - range[0] == count * width, body + range[1] <= bytes.count else {
                throw TrainingError("\(path): tensor \(name)'s byte range \(range) does not match shape \(shape) of \(dtype)")
            }
            var values = [Float](repeating: 0, count: count)
            let start = body + range[0]
            for i in 0..<count {
                let p = start + i * width
                switch dtype {
                case "F32":
                    values[i] = Float(bitPattern: UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 3]) << 24)
                case "F16":
                    values[i] = hone_f16_to_f32(UInt16(bytes[p]) | UInt16(bytes[p + 1]) << 8)
                default:
                    values[i] = Float(bitPattern: (UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8) << 16)
                }
            }
            tensors[name] = Tensor(shape: shape, values: values)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The file's bytes: tensors in name order, float32, contiguous, header padded to 8.
    public func serialized() -> [UInt8] {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = .object([
                "dtype": .string("F32"),
                "shape": .array(t.shape.map { .int($0) }),
                "data_offsets": .array([.int(offset), .int(offset + 4 * t.values.count)]),
            ])
            offset += 4 * t.values.count
        }
        var json = Array(JSONValue.object(header).jsonText.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out += json
        for name in names {
            for v in tensors[name]!.values {
                withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    public func write(to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(serialized())) else {
            throw TrainingError("cannot write \(path)")
        }
    }
}

/// Why training, or reading or writing an adapter, failed.
public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
