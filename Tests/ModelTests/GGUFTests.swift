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
        #expect(byName.count == 6)
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
