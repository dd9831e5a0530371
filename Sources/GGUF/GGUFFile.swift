import CKernels
import Foundation
import Synchronization

/// A tensor's description in a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// Sizes, fastest-varying first (ggml's `ne`): a weight `W[out][in]` has `[in, out]`.
    public let dims: [Int]
    public let type: GGMLType
    /// Byte offset of the data from the start of the file.
    public let fileOffset: Int
    public var elementCount: Int { dims.reduce(1, *) }
    public var byteCount: Int { type.bytes(for: elementCount) }
}

/// A memory-mapped GGUF file (v2 or v3): metadata, tensor infos, and tensor bytes that are
/// read in place. Every read is bounds-checked, so a truncated or corrupt file is an error
/// that says what was being read, never a crash.
public final class GGUFFile: @unchecked Sendable {
    // Safe to share: the mapping is read-only and lives as long as this object.
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [String: GGUFTensorInfo]
    /// Tensor names in file order.
    public let tensorNames: [String]
    public let alignment: Int
    private let base: UnsafeRawPointer
    private let size: Int
    /// The whole mapped file.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
    /// `sha256`, once computed.
    let digest = Mutex<String?>(nil)

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw GGUFError("cannot stat \(path)") }
        size = Int(st.st_size)
        guard size >= 24 else { throw GGUFError("\(path) is not a GGUF file: only \(size) bytes") }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw GGUFError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(map)
        var reader = Reader(base: base, size: size)
        do {
            let magic = try reader.u32("magic")
            guard magic == 0x4655_4747 else { throw GGUFError("not a GGUF file (magic is not \"GGUF\")") }
            version = try reader.u32("version")
            guard version == 2 || version == 3 else { throw GGUFError("GGUF version \(version) is not supported (2 or 3)") }
            let tensorCount = try reader.u64("tensor count")
            let kvCount = try reader.u64("metadata count")
            guard tensorCount < 1_000_000, kvCount < 1_000_000 else {
                throw GGUFError("implausible counts (\(tensorCount) tensors, \(kvCount) metadata entries): corrupt header")
            }
            var metadata: [String: GGUFValue] = [:]
            var keys: [String] = []
            for _ in 0..<kvCount {
                let key = try reader.string("metadata key")
                let type = try reader.u32("type of \(key)")
                metadata[key] = try reader.value(type: type, what: key)
                keys.append(key)
            }
            let alignment = metadata["general.alignment"]?.intValue ?? 32
            guard alignment > 0, alignment & (alignment - 1) == 0 else {
                throw GGUFError("general.alignment \(alignment) is not a power of two")
            }
            var infos: [(String, [Int], UInt32, UInt64)] = []
            for _ in 0..<tensorCount {
                let name = try reader.string("tensor name")
                let nDims = try reader.u32("dimensions of \(name)")
                guard nDims >= 1 && nDims <= 4 else { throw GGUFError("tensor \(name) has \(nDims) dimensions (1-4 allowed)") }
                var dims: [Int] = []
                for _ in 0..<nDims {
                    let d = try reader.u64("shape of \(name)")
                    guard d > 0 && d < 1 << 32 else { throw GGUFError("tensor \(name) has an invalid dimension \(d)") }
                    dims.append(Int(d))
                }
                let type = try reader.u32("type of \(name)")
                let offset = try reader.u64("offset of \(name)")
                infos.append((name, dims, type, offset))
            }
            let dataStart = (reader.position + alignment - 1) / alignment * alignment
            var tensors: [String: GGUFTensorInfo] = [:]
            for (name, dims, typeID, offset) in infos {
                guard let type = GGMLType(rawValue: typeID) else {
                    throw GGUFError("tensor \(name) has type \(GGMLType.name(of: typeID)), which is not supported (Hone reads \(GGMLType.supportedNames))")
                }
                guard dims[0] % type.blockSize == 0 else {
                    throw GGUFError("tensor \(name): row length \(dims[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
                }
                // Bounds before arithmetic: a corrupt offset or shape must not overflow an Int.
                // Every type stores an element in at least half a byte.
                let elements = dims.reduce((value: 1, overflow: false)) { product, d in
                    let (value, overflow) = product.value.multipliedReportingOverflow(by: d)
                    return (value, product.overflow || overflow)
                }
                guard offset < UInt64(size), !elements.overflow, elements.value <= 2 * size else {
                    throw GGUFError("file is truncated: tensor \(name) (shape \(dims), offset \(offset)) cannot fit in its \(size) bytes")
                }
                let info = GGUFTensorInfo(name: name, dims: dims, type: type, fileOffset: dataStart + Int(offset))
                guard offset % UInt64(alignment) == 0 else { throw GGUFError("tensor \(name) data is not aligned to \(alignment)") }
                guard info.fileOffset + info.byteCount <= size else {
                    throw GGUFError("file is truncated: tensor \(name) needs bytes \(info.fileOffset)..<\(info.fileOffset + info.byteCount), the file has \(size)")
                }
                guard tensors[name] == nil else { throw GGUFError("tensor \(name) appears twice") }
                tensors[name] = info
            }
            self.metadata = metadata
            self.metadataKeys = keys
            self.alignment = alignment
            self.tensors = tensors
            self.tensorNames = infos.map(\.0)
        } catch {
            munmap(map, size)
            if let e = error as? GGUFError { throw GGUFError("\(path): \(e.description)") }
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }

    /// The raw bytes of a tensor, in place in the mapping (valid while this file lives).
    public func data(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + info.fileOffset, count: info.byteCount)
    }

    /// A tensor's values as float32 (dequantized).
    public func floats(_ name: String) throws -> [Float] {
        guard let info = tensors[name] else { throw GGUFError("\(path) has no tensor \(name)") }
        var out = [Float](repeating: 0, count: info.elementCount)
        let status = out.withUnsafeMutableBufferPointer { dst in
            hone_dequantize(Int32(info.type.rawValue), data(of: info).baseAddress, dst.baseAddress, info.elementCount)
        }
        precondition(status == 0, "every GGMLType case has a dequantizer")
        return out
    }
}

/// Bounds-checked little-endian reads from the mapping.
struct Reader {
    let base: UnsafeRawPointer
    let size: Int
    var position = 0

    mutating func bytes(_ count: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        guard count >= 0, position + count <= size else {
            throw GGUFError("file is truncated at byte \(position) while reading \(what)")
        }
        defer { position += count }
        return UnsafeRawBufferPointer(start: base + position, count: count)
    }

    mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        let raw = try bytes(MemoryLayout<T>.size, what)
        return T(littleEndian: raw.loadUnaligned(as: T.self))
    }

    mutating func u32(_ what: String) throws -> UInt32 { try load(UInt32.self, what) }
    mutating func u64(_ what: String) throws -> UInt64 { try load(UInt64.self, what) }

    mutating func string(_ what: String) throws -> String {
        let length = try u64("length of \(what)")
        guard length <= UInt64(size) else { throw GGUFError("\(what) claims \(length) bytes: corrupt file") }
        let raw = try bytes(Int(length), what)
        return String(decoding: raw, as: UTF8.self)
    }

    mutating func value(type: UInt32, what: String, depth: Int = 0) throws -> GGUFValue {
        guard let id = GGUFValue.TypeID(rawValue: type) else { throw GGUFError("\(what) has unknown value type \(type)") }
        switch id {
        case .uint8: return .uint8(try load(UInt8.self, what))
        case .int8: return .int8(try load(Int8.self, what))
        case .uint16: return .uint16(try load(UInt16.self, what))
        case .int16: return .int16(try load(Int16.self, what))
        case .uint32: return .uint32(try load(UInt32.self, what))
        case .int32: return .int32(try load(Int32.self, what))
        case .uint64: return .uint64(try load(UInt64.self, what))
        case .int64: return .int64(try load(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, what)))
        case .bool: return .bool(try load(UInt8.self, what) != 0)
        case .string: return .string(try string(what))
        case .array:
            guard depth < 4 else { throw GGUFError("\(what): arrays nested too deeply") }
            let elementType = try u32("element type of \(what)")
            let count = try u64("length of \(what)")
            guard count <= UInt64(size) else { throw GGUFError("\(what) claims \(count) elements: corrupt file") }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<count { items.append(try value(type: elementType, what: what, depth: depth + 1)) }
            return .array(elementType: elementType, items)
        }
    }
}
