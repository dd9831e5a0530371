import Foundation
import GGUF
import JSON
import Testing

@Suite("GGUF reading against gguf-py")
struct GGUFTests {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    @Test("each tensor type dequantizes exactly as gguf-py does")
    func typesDequantizeExactly() throws {
        let expected = try JSONValue(parsing: Data(contentsOf: Self.fixtures.appendingPathComponent("quants.json")))["types_gguf"]!
        let file = try GGUFFile(path: Self.fixtures.appendingPathComponent("types.gguf").path)
        guard case .object(let byName) = expected else { Issue.record("fixture shape"); return }
        #expect(byName.count == 11)  // every GGMLType, none left out
        #expect(Set(byName.keys) == Set(GGMLType.allCases.map { $0.name.lowercased() }))
        for (name, values) in byName {
            let ours = try file.floats(name)
            let theirs = values.arrayValue.map { $0.compactMap(\.doubleValue).map(Float.init) }!
            #expect(ours == theirs, "\(name)")
        }
    }

    @Test("the real model's tensors dequantize exactly as gguf-py does", .enabled(if: RealModel.path != nil))
    func realModelTensors() throws {
        let expected = try JSONValue(parsing: Data(contentsOf: Self.fixtures.appendingPathComponent("quants.json")))["real_model"]!
        guard case .object(let byName) = expected else { Issue.record("fixture shape"); return }
        for (name, e) in byName {
            let values = try RealModel.model.file.floats(name)
            let first = e["first"]!.arrayValue.map { $0.compactMap(\.doubleValue).map(Float.init) }!
            let last = e["last"]!.arrayValue.map { $0.compactMap(\.doubleValue).map(Float.init) }!
            #expect(Array(values.prefix(64)) == first, "\(name)")
            #expect(Array(values.suffix(64)) == last, "\(name)")
            let sum = values.reduce(0.0) { $0 + Double($1) }
            #expect(abs(sum - e["sum"]!.doubleValue!) <= 1e-6 * max(1, abs(sum)), "\(name)")
        }
    }

    @Test("the real model's metadata and tensor table", .enabled(if: RealModel.path != nil))
    func realModelMetadata() throws {
        let file = RealModel.model.file
        #expect(file.version == 3)
        #expect(file.tensors.count == 272)
        #expect(file.tensors["token_embd.weight"]?.type == .q8_0)
        #expect(file.tensors.values.filter { $0.type == .q4_1 }.count == 210)
        #expect(RealModel.model.config.layers == 30 && RealModel.model.config.width == 576)
        #expect(RealModel.model.config.heads == 9 && RealModel.model.config.kvHeads == 3)
        #expect(RealModel.model.config.ropeBase == 100_000)
    }
}

@Suite("GGUF writer and reader round trip")
struct GGUFRoundTripTests {
    @Test("every metadata value type, arrays and nested arrays survive a write and a read")
    func metadataTypes() throws {
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(65000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("u64", .uint64(1 << 40)),
            ("i64", .int64(-(1 << 40))), ("f32", .float32(1.5)), ("f64", .float64(-2.25)), ("b", .bool(true)),
            ("s", .string("héllo 😀")), ("arr", .array(elementType: 8, [.string("a"), .string("")])),
            ("nested", .array(elementType: 9, [.array(elementType: 4, [.uint32(1), .uint32(2)])])),
        ]
        var w = GGUFWriter()
        for (k, v) in values { w.set(k, v) }
        w.addTensor("t", dims: [32, 2], type: .q8_0, values: (0..<64).map { Float($0) / 10 })
        let path = NSTemporaryDirectory() + "hone-rt-\(UUID().uuidString).gguf"
        try w.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        for (k, v) in values { #expect(file.metadata[k] == v, "\(k)") }
        #expect(file.metadataKeys == values.map(\.0))
        #expect(file.tensors["t"]?.dims == [32, 2])
        let back = try file.floats("t")
        #expect(zip(back, (0..<64).map { Float($0) / 10 }).allSatisfy { abs($0 - $1) <= 6.3 / 127 / 2 + 1e-3 }, "within half a Q8_0 step")
    }
}
