import CKernels

/// A metadata value of a GGUF file.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16)
    case uint32(UInt32), int32(Int32), uint64(UInt64), int64(Int64)
    case float32(Float), float64(Double)
    case bool(Bool)
    case string(String)
    /// Elements all of one type (`elementType`, a GGUF value type id).
    case array(elementType: UInt32, [GGUFValue])

    /// The value as an integer, for any integer type.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    /// The value as a double, for any numeric type.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [GGUFValue]? {
        if case .array(_, let a) = self { return a }
        return nil
    }

    /// GGUF value type ids.
    enum TypeID: UInt32 {
        case uint8 = 0, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64, float64
    }

    var typeID: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }
}

/// A tensor's element type (ggml's numbering). Quantized types store blocks of values.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// Values per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return Int(HONE_BLOCK_VALUES)
        case .q4_K, .q5_K, .q6_K: return Int(HONE_SUPERBLOCK_VALUES)
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return MemoryLayout<hone_block_q4_0>.size
        case .q4_1: return MemoryLayout<hone_block_q4_1>.size
        case .q5_0: return MemoryLayout<hone_block_q5_0>.size
        case .q5_1: return MemoryLayout<hone_block_q5_1>.size
        case .q8_0: return MemoryLayout<hone_block_q8_0>.size
        case .q4_K: return MemoryLayout<hone_block_q4_k>.size
        case .q5_K: return MemoryLayout<hone_block_q5_k>.size
        case .q6_K: return MemoryLayout<hone_block_q6_k>.size
        }
    }

    /// ggml's name of the type ("Q4_K"), as llama.cpp prints it.
    public var name: String { Self.name(of: rawValue) }

    /// What this reader decodes, for error messages.
    public static var supportedNames: String { allCases.map(\.name).joined(separator: ", ") }

    /// Bytes for `count` values (a multiple of the block size).
    public func bytes(for count: Int) -> Int { count / blockSize * blockBytes }

    /// ggml's name for type id `id`, known to Hone or not.
    static func name(of id: UInt32) -> String {
        let names: [UInt32: String] = [0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
                                       10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
                                       17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
                                       23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
                                       30: "BF16"]
        return names[id] ?? "type \(id)"
    }
}

/// A GGUF file that cannot be used, with what is wrong and where.
public struct GGUFError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
