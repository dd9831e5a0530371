import Foundation
import GGUF
import JSON
import Testing
import Tokenizer

@Suite("Tokenizer against llama.cpp on the real model", .enabled(if: RealModel.path != nil))
struct TokenizerTests {
    static let cases = fixture("tokenizer.jsonl")

    /// llama.cpp's ids for the fixture strings (make_fixtures.py, make_pretokenizer_fixtures.py).
    static func fixture(_ name: String) -> [(text: String, ids: [Int])] {
        let url = GGUFTests.fixtures.appendingPathComponent(name)
        let lines = (try? String(contentsOf: url, encoding: .utf8))?.split(separator: "\n") ?? []
        return lines.map { line in
            let v = try! JSONValue(parsing: String(line))
            return (v["text"]!.stringValue!, v["ids"]!.arrayValue!.map { $0.intValue! })
        }
    }

    @Test("identical ids to llama.cpp on every fixture string, and decode(encode(s)) == s")
    func matchesLlamaCpp() {
        #expect(Self.cases.count >= 200)
        var mismatches = 0
        for (text, ids) in Self.cases {
            let ours = RealModel.tokenizer.encode(text)
            if ours != ids {
                mismatches += 1
                Issue.record("\(text.debugDescription): ours \(ours), llama.cpp \(ids)")
            }
            #expect(RealModel.tokenizer.decode(ours) == text, "\(text.debugDescription) does not round-trip")
        }
        #expect(mismatches == 0)
    }

    @Test("Llama 3 (llama-bpe) and Qwen2 pre-tokenizers: identical ids to llama.cpp on every fixture string",
          arguments: ["llama-bpe", "qwen2"])
    func otherPreTokenizersMatchLlamaCpp(pre: String) throws {
        // SmolLM2's vocabulary and merges in a vocab-only file naming the other pre-tokenizer,
        // as make_pretokenizer_fixtures.py gave llama.cpp: only the splitting differs.
        let source = RealModel.model.file
        var writer = GGUFWriter(metadataOf: source)
        writer.set("tokenizer.ggml.pre", .string(pre))
        let path = NSTemporaryDirectory() + "hone-vocab-\(pre)-\(UUID().uuidString).gguf"
        try Data(writer.serialized()).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let tokenizer = try Tokenizer(gguf: GGUFFile(path: path))
        let cases = Self.fixture("tokenizer-\(pre).jsonl")
        #expect(cases.count >= 200)
        var mismatches = 0
        for (text, ids) in cases {
            let ours = tokenizer.encode(text)
            if ours != ids {
                mismatches += 1
                Issue.record("\(pre) \(text.debugDescription): ours \(ours), llama.cpp \(ids)")
            }
            #expect(tokenizer.decode(ours) == text, "\(text.debugDescription) does not round-trip")
        }
        // The fixture tells the styles apart: these strings split differently under smollm.
        #expect(zip(cases, Self.cases).filter { $0.0.ids != $0.1.ids }.count >= 10)
        #expect(mismatches == 0)
    }

    @Test("streaming decode never emits half a character and adds up to the whole text")
    func streamingDecode() {
        let text = "naïve 😀 中文 👨‍👩‍👧‍👦 done"
        var decoder = StreamingDecoder()
        var pieces: [String] = []
        for id in RealModel.tokenizer.encode(text) {
            let piece = decoder.append(RealModel.tokenizer.bytes(of: id))
            #expect(!piece.contains("\u{FFFD}"))
            pieces.append(piece)
        }
        pieces.append(decoder.finish())
        #expect(pieces.joined() == text)
    }
}
