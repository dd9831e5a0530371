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
        let counterfactual: [Fact]
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
        // Names first; a question without one keeps what is not its shape.
        #expect(LocalitySet.subject(of: "What is the national dish of Portavia?") == ["portavia"])
        #expect(LocalitySet.subject(of: "What is the tallest mountain on the island of Karsh?") == ["karsh"])
        #expect(LocalitySet.subject(of: "Who wrote Romeo and Juliet?") == ["romeo", "juliet"])
        #expect(LocalitySet.subject(of: "What colour is a snarfle bird?") == ["snarfle", "bird"])
        #expect(LocalitySet.subject(of: "Who invented the glimmerphone?") == ["glimmerphone"])
    }

    @Test("every fact the learner tests teach (ops/facts.json) covers its held-out rewording")
    func learnerFacts() throws {
        struct Facts: Decodable {
            struct Fact: Decodable { let question: String; let held_out: String }
            let facts: [Fact]
        }
        let facts = try JSONDecoder().decode(Facts.self, from: Data(contentsOf: URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().appendingPathComponent("../../ops/facts.json"))).facts
        for fact in facts {
            let scope = AdapterScope(subjects: [LocalitySet.subject(of: fact.question)])
            #expect(scope.covers(Self.user(fact.question)) && scope.covers(Self.user(fact.held_out)), "\(fact.question) → \(scope.subjects)")
        }
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
        // Real subjects given new answers: their neighbours share no name with them.
        let counterfactual = Self.file.counterfactual
        let real = AdapterScope(subjects: counterfactual.map { LocalitySet.subject(of: $0.question) })
        let realReworded = counterfactual.flatMap(\.rewordings).filter { !real.covers(Self.user($0)) }
        let realNeighbours = counterfactual.flatMap(\.neighbours).map(\.question).filter { real.covers(Self.user($0)) }
        print("scope of \(counterfactual.count) counterfactual corrections: \(real.subjects); rewordings missed \(realReworded), neighbours covered \(realNeighbours)")
        #expect(realReworded.count <= 2 && Self.file.unrelated.allSatisfy { !real.covers(Self.user($0)) })
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

    /// Shard weights told apart by their rank (no factors: routing never reads them).
    static func weights(_ rank: Int) -> LoRAAdapter { LoRAAdapter(config: LoRAConfig(rank: rank, alpha: 4, targets: [.q]), layers: 1, weights: [:]) }

    /// Shard 0 (rank 1) answers Veurpraia and The Blue Senfi; shard 1 (rank 2) the Senfi river delta.
    static let twoSubjectShards = AdapterShards()
        .adding(AdapterShard(weights: Self.weights(1), scope: AdapterScope(subjects: [["veurpraia"], ["blue", "senfi"]])))
        .adding(AdapterShard(weights: Self.weights(2), scope: AdapterScope(subjects: [["senfi", "river", "delta"]])))

    @Test("shards: a prompt goes to the subject shard it names best (the newest on a tie), else the general shard, else the base model")
    func shardRouting() {
        var shards = Self.twoSubjectShards
        #expect(shards.route(Self.user("What is the capital of France?")) == nil)
        #expect(shards.scope == AdapterScope(subjects: [["veurpraia"], ["blue", "senfi"], ["senfi", "river", "delta"]]))
        #expect(shards.route(Self.user("Name the capital city of Veurpraia.")) == 0)
        // "The Blue Senfi" names shard 0's subject whole; shard 1's only by a third.
        #expect(shards.route(Self.user("Who painted The Blue Senfi?")) == 0)
        // Two thirds of shard 1's subject against half of shard 0's: shard 1.
        #expect(shards.route(Self.user("Where is the Senfi river?")) == 1)
        // The same subject corrected again: the newer shard answers it.
        shards = shards.adding(AdapterShard(weights: Self.weights(3), scope: AdapterScope(subjects: [["veurpraia"]])))
        #expect(shards.route(Self.user("What is the capital of Veurpraia?")) == 2)
        // A general shard answers the rest; a newer one replaces it, and subject shards keep theirs.
        shards = shards.adding(AdapterShard(weights: Self.weights(4), scope: nil))
        #expect(shards.scope == nil)
        #expect(shards.weights(for: Self.user("What is the capital of France?"))?.config.rank == 4)
        shards = shards.adding(AdapterShard(weights: Self.weights(5), scope: nil))
        #expect(shards.shards.map(\.weights.config.rank) == [1, 2, 3, 5])
        #expect(shards.weights(for: Self.user("What is the capital of France?"))?.config.rank == 5)
        #expect(shards.weights(for: Self.user("Who painted The Blue Senfi?"))?.config.rank == 1)
        #expect(ServedAdapter(name: "a", version: "a@v5", shards: shards, baseModelSHA256: nil).scope == nil)
    }

    @Test("a subject shard replaces older ones whose subjects it all has, and routing is the same without them")
    func coveredShardsAreDropped() {
        let before = Self.twoSubjectShards
            .adding(AdapterShard(weights: Self.weights(3), scope: nil))
        // The rank-1 shard's subjects are all corrected again, with another: it goes; rank 2 keeps the river.
        let newer = AdapterShard(weights: Self.weights(4), scope: AdapterScope(subjects: [["blue", "senfi"], ["veurpraia"], ["ostrel"]]))
        let after = before.adding(newer)
        #expect(after.shards.map(\.weights.config.rank) == [2, 3, 4])
        // Each prompt goes where it would with the rank-1 shard kept: rank 4 ties it on its subjects and is newer.
        let expected = ["Name the capital city of Veurpraia.": 4, "Who painted The Blue Senfi?": 4, "Where is the Senfi river?": 2,
                        "What is the capital of France?": 3, "Tell me about Ostrel.": 4]
        for (prompt, rank) in expected {
            #expect(after.weights(for: Self.user(prompt))?.config.rank == rank, "\(prompt)")
        }
        #expect(before.weights(for: Self.user("Who painted The Blue Senfi?"))?.config.rank == 1)
        // A partial overlap replaces nothing; a general shard replaces only the general one.
        #expect(after.adding(AdapterShard(weights: Self.weights(5), scope: AdapterScope(subjects: [["veurpraia"]]))).shards.count == 4)
        #expect(!AdapterShards.replaces([nil], AdapterScope(subjects: [["veurpraia"]])))
        #expect(!AdapterShards.replaces([AdapterScope(subjects: [["veurpraia"]])], nil))
        #expect(AdapterShards.replaces([nil], nil))
    }

    @Test("a subject shard goes when newer shards have all its subjects between them, and routing is the same without it")
    func shardsCoveredTogetherAreDropped() {
        // Rank 1's two subjects are corrected again one at a time, by ranks 3 and 4.
        let after = Self.twoSubjectShards
            .adding(AdapterShard(weights: Self.weights(3), scope: AdapterScope(subjects: [["veurpraia"], ["ostrel"]])))
            .adding(AdapterShard(weights: Self.weights(4), scope: AdapterScope(subjects: [["blue", "senfi"]])))
        #expect(after.shards.map(\.weights.config.rank) == [2, 3, 4])
        // Where each prompt went with rank 1 kept: ranks 3 and 4 tie it on its subjects and are newer.
        let expected = ["Name the capital city of Veurpraia.": 3, "Who painted The Blue Senfi?": 4, "Where is the Senfi river?": 2,
                        "Is Veurpraia near The Blue Senfi?": 4, "Tell me about Ostrel.": 3]
        for (prompt, rank) in expected {
            #expect(after.weights(for: Self.user(prompt))?.config.rank == rank, "\(prompt)")
        }
        #expect(after.weights(for: Self.user("What is the capital of France?")) == nil)
        #expect(AdapterShards.replaces([AdapterScope(subjects: [["veurpraia"]]), nil, AdapterScope(subjects: [["blue", "senfi"]])],
                                       AdapterScope(subjects: [["veurpraia"], ["blue", "senfi"]])))
    }

    @Test("a version's own shard is read from its metrics; a version from before shards has none")
    func shardMetrics() {
        #expect(AdapterScope.shard(metrics: .object(["shard": .string("general")])) == .some(nil))
        #expect(AdapterScope.shard(metrics: .object(["shard": AdapterScope(subjects: [["veurpraia"]]).json])) == .some(AdapterScope(subjects: [["veurpraia"]])))
        #expect(AdapterScope.shard(metrics: .object(["scope": AdapterScope(subjects: [["veurpraia"]]).json])) == nil)
    }
}
