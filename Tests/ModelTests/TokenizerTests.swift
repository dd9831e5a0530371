import Foundation
import JSON
import Testing
import Tokenizer

@Suite("Tokenizer against llama.cpp on the real model", .enabled(if: RealModel.path != nil))
struct TokenizerTests {
    static let cases: [(text: String, ids: [Int])] = {
        let url = GGUFTests.fixtures.appendingPathComponent("tokenizer.jsonl")
        let lines = (try? String(contentsOf: url, encoding: .utf8))?.split(separator: "\n") ?? []
        return lines.map { line in
            let v = try! JSONValue(parsing: String(line))
            return (v["text"]!.stringValue!, v["ids"]!.arrayValue!.map { $0.intValue! })
        }
    }()

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

    @Test("ChatML rendering inserts the model's default system prompt only when none is given")
    func chatTemplate() {
        let template = ChatTemplate(template: RealModel.tokenizer.chatTemplate)
        #expect(template.defaultSystemPrompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        #expect(template.render([ChatMessage(role: "user", content: "Hi")]) ==
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(template.render([ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi")],
                                addGenerationPrompt: false) ==
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    }
}
