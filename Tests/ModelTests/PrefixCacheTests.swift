import Foundation
import Generation
import Llama
import Testing
import Tokenizer

@Suite("Prompt prefixes shared between requests (real model)", .enabled(if: RealModel.path != nil), .serialized, .timeLimit(.minutes(3)))
struct PrefixCacheTests {
    static let france = [ChatMessage(role: "user", content: "What is the capital of France?")]
    static let fruit = [ChatMessage(role: "user", content: "Name a fruit.")]

    /// The prompt's last logits, prefilled with `reuse` (or without a cache).
    func logits(_ messages: [ChatMessage], reuse: PrefixCache?, adapter: LoRAAdapter? = nil) throws -> [Float] {
        let model = RealModel.model
        let (tokens, starts) = RealModel.tokenizer.chatTemplate.prompt(messages, with: RealModel.tokenizer)
        return try model.prefill(tokens, turnStarts: starts, cache: model.makeCache(capacity: tokens.count), adapter: adapter, reuse: reuse)
    }

    @Test("turns start at <|im_start|>; the tokens are tokenize's")
    func turnStarts() {
        let tokenizer = RealModel.tokenizer
        let conversation = Self.france + [ChatMessage(role: "assistant", content: "Paris."), ChatMessage(role: "user", content: "And of Italy?")]
        let (tokens, starts) = tokenizer.chatTemplate.prompt(conversation, with: tokenizer)
        #expect(tokens == tokenizer.chatTemplate.tokenize(conversation, with: tokenizer))
        // The default system turn, then user, assistant, user and the generation prompt.
        #expect(starts.count == 4)
        #expect(starts.allSatisfy { tokens[$0] == tokenizer.id(of: "<|im_start|>") })
    }

    @Test("a request whose prompt starts with a cached prefix prefills only the rest, and its logits are bit for bit those without the cache")
    func reuseIsExact() throws {
        let cache = PrefixCache()
        let alone = try logits(Self.fruit, reuse: nil)
        let franceAlone = try logits(Self.france, reuse: nil)
        // The first request fills the cache (nothing to reuse), the second shares the system turn.
        #expect(try logits(Self.france, reuse: cache) == franceAlone)
        let (_, starts) = RealModel.tokenizer.chatTemplate.prompt(Self.fruit, with: RealModel.tokenizer)
        #expect(cache.counts.reused == 0)
        #expect(try logits(Self.fruit, reuse: cache) == alone)
        #expect(cache.counts.reused == starts[0])
        // The same prompt again reuses everything before the generation prompt.
        #expect(try logits(Self.fruit, reuse: cache) == alone)
        #expect(cache.counts.reused == starts[0] + starts[1])
        // A conversation that goes on reuses its earlier turns.
        let goesOn = Self.fruit + [ChatMessage(role: "assistant", content: "An apple."), ChatMessage(role: "user", content: "Another?")]
        let before = cache.counts.reused
        #expect(try logits(goesOn, reuse: cache) == logits(goesOn, reuse: nil))
        #expect(cache.counts.reused - before == starts[1])
    }

    @Test("an unprepared adapter's requests neither reuse nor fill the cache; a prepared one's reuse only its own prefixes, bit for bit; the cache keeps at most its token budget")
    func adaptersAndBudget() throws {
        let model = RealModel.model
        var adapter = LoRAAdapter.initialized(config: LoRAConfig(), model: model.config, seed: 3)
        for key in adapter.keys {   // B non-zero: the adapter's keys and values differ from the base's
            for i in 0..<16 { adapter.weights[key]!.b[i] = 0.05 * Float(i % 5 - 2) }
        }
        let cache = PrefixCache()
        _ = try logits(Self.france, reuse: cache)
        let held = cache.heldTokens
        #expect(held > 0)
        let counts = cache.counts
        _ = try logits(Self.fruit, reuse: cache, adapter: adapter)
        #expect(cache.counts == counts)
        #expect(cache.heldTokens == held)

        // Served adapters are prepared: their system turn is cached apart from the base's.
        let served = adapter.preparedForInference()
        let (_, starts) = RealModel.tokenizer.chatTemplate.prompt(Self.fruit, with: RealModel.tokenizer)
        let franceAlone = try logits(Self.france, reuse: nil, adapter: adapter), fruitAlone = try logits(Self.fruit, reuse: nil, adapter: adapter)
        #expect(franceAlone != (try logits(Self.france, reuse: nil)))
        #expect(try logits(Self.france, reuse: cache, adapter: served) == franceAlone)
        #expect(cache.counts.reused == counts.reused)   // not the base's prefix
        #expect(cache.heldTokens > held)
        #expect(try logits(Self.fruit, reuse: cache, adapter: served) == fruitAlone)
        #expect(cache.counts.reused == counts.reused + starts[0])
        // Another preparation of the same weights is another entry.
        #expect(try logits(Self.fruit, reuse: cache, adapter: adapter.preparedForInference()) == fruitAlone)
        #expect(cache.counts.reused == counts.reused + starts[0])

        let small = PrefixCache(maxTokens: 40)
        _ = try logits(Self.france, reuse: small)
        _ = try logits(Self.fruit, reuse: small)
        #expect(small.heldTokens <= 40)
        #expect(small.heldTokens > 0)
    }
}
