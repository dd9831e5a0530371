import Foundation
import Generation
import JSON
import Llama
import Learning
import Testing
import Tokenizer

/// Which prompts an adapter of corrections answers (`AdapterScope`), on the facts of
/// `ops/lifelong.json`: the benchmark's questions, rewordings, neighbours and unrelated prompts.
@Suite("Adapter scope: corrections answer only prompts naming their subject")
struct AdapterScopeTests {
    struct Fact: Decodable {
        struct Neighbour: Decodable { let question: String }
        let question: String
        let rewordings: [String]
        let neighbours: [Neighbour]
    }
    struct File: Decodable {
        let facts: [Fact]
        let unrelated: [String]
    }
    static let file = try! JSONDecoder().decode(File.self, from: Data(contentsOf: URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("../../ops/lifelong.json")))

    static func user(_ text: String) -> [ChatMessage] { [ChatMessage(role: "user", content: text)] }

    @Test("a correction's subject is its question less the shape it shares with other questions")
    func subjects() {
        #expect(LocalitySet.subject(of: "What is the capital of Veurpraia?") == ["veurpraia"])
        #expect(LocalitySet.subject(of: "Who painted The Blue Senfi?") == ["blue", "senfi"])
        // A real subject (a counterfactual correction) is found the same way.
        #expect(LocalitySet.subject(of: "What is the capital of Portugal?") == ["portugal"])
        #expect(LocalitySet.subject(of: "What is it?").isEmpty)
    }

    @Test("the taught question and its rewordings are covered; neighbours and unrelated prompts are not")
    func coverage() {
        let facts = Self.file.facts
        let scope = AdapterScope(subjects: facts.map { LocalitySet.subject(of: $0.question) })
        #expect(scope.subjects.count == facts.count)
        let taught = facts.filter { scope.covers(Self.user($0.question)) }.count
        let reworded = facts.flatMap(\.rewordings).filter { scope.covers(Self.user($0)) }
        let neighbours = facts.flatMap(\.neighbours).map(\.question).filter { scope.covers(Self.user($0)) }
        let unrelated = Self.file.unrelated.filter { scope.covers(Self.user($0)) }
        print("scope of \(facts.count) facts covers: taught \(taught), rewordings \(reworded.count)/\(facts.count * 2), neighbours \(neighbours), unrelated \(unrelated)")
        #expect(taught == facts.count)
        #expect(reworded.count == facts.count * 2)
        #expect(neighbours.isEmpty)
        #expect(unrelated.isEmpty)
    }

    @Test("a conversation is covered by any user turn naming the subject; the version records its scope")
    func conversationsAndRecord() throws {
        let scope = AdapterScope(subjects: [["veurpraia"], ["blue", "senfi"]])
        #expect(scope.covers([ChatMessage(role: "user", content: "Tell me about Veurpraia."),
                              ChatMessage(role: "assistant", content: "It is a country."),
                              ChatMessage(role: "user", content: "What is its capital?")]))
        #expect(!scope.covers([ChatMessage(role: "system", content: "Veurpraia"), ChatMessage(role: "user", content: "Hi")]))
        #expect(scope.covers(Self.user("Where does The Blue Senfi hang?")))
        #expect(!scope.covers(Self.user("What makes the sky blue?")))
        #expect(AdapterScope(metrics: .object(["scope": scope.json])) == scope)
        #expect(AdapterScope(metrics: .object([:])) == nil)
        // Adding a subject already there keeps one copy.
        #expect(scope.adding(AdapterScope(subjects: [["veurpraia"], ["uroska"]])).subjects == [["veurpraia"], ["blue", "senfi"], ["uroska"]])
    }

    @Test("a served adapter with a scope answers with its weights only inside it")
    func servedWeights() {
        let weights = LoRAAdapter(config: LoRAConfig(rank: 2, alpha: 4, targets: [.q]), layers: 1, weights: [:])
        let scoped = ServedAdapter(name: "a", version: "a@v1", weights: weights, baseModelSHA256: nil, scope: AdapterScope(subjects: [["veurpraia"]]))
        #expect(scoped.weights(for: Self.user("What is the capital of Veurpraia?")) != nil)
        #expect(scoped.weights(for: Self.user("What is the capital of France?")) == nil)
        let everywhere = ServedAdapter(name: "a", version: "a@v1", weights: weights, baseModelSHA256: nil)
        #expect(everywhere.weights(for: Self.user("What is the capital of France?")) != nil)
    }
}
