import Generation
import JSON

extension AdapterScope {
    /// The scope a version's metrics record (`scope`: each correction's subject words); nil
    /// when the version answers every prompt.
    public init?(metrics: JSONValue) {
        guard let list = metrics["scope"]?.arrayValue else { return nil }
        self.init(subjects: list.map { $0.arrayValue?.compactMap(\.stringValue) ?? [] })
    }

    /// The scope of a version's own shard (`metrics.shard`): `.some(nil)` for a general
    /// shard, nil for a version from before shards, whose blob holds the whole adapter.
    public static func shard(metrics: JSONValue) -> AdapterScope?? {
        guard let shard = metrics["shard"] else { return nil }
        if shard.stringValue == "general" { return .some(nil) }
        return .some(AdapterScope(metrics: .object(["scope": shard])))
    }

    /// As the version's metrics record it.
    public var json: JSONValue { .array(subjects.map { .array($0.map { .string($0) }) }) }

    /// The scope of a shard trained on `trained`: each correction's subject. nil (a general
    /// shard, for every prompt) when an item is not a correction or its question names no
    /// subject: what the adapter learned then may matter to any prompt.
    public static func of(training trained: [ItemPlan]) -> AdapterScope? {
        var subjects: [[String]] = []
        for plan in trained {
            guard let question = plan.question else { return nil }
            let subject = LocalitySet.subject(of: question)
            if subject.isEmpty { return nil }
            subjects.append(subject)
        }
        return AdapterScope(subjects: subjects)
    }
}

extension LocalitySet {
    /// The subject of a correction's `question`: the names it holds (capitalised words other
    /// than function words: "Who painted The Blue Senfi?" → `blue senfi`, "What is the
    /// national dish of Portavia?" → `portavia`); for a question without one, its words less
    /// function words and less the shape it shares with the closest questions of the banks
    /// ("What colour is a snarfle bird?" is closest to "What colour is a banana?", so
    /// `snarfle bird`). Words are compared as `AdapterScope.words` gives them.
    public static func subject(of question: String) -> [String] {
        var seen = Set<String>()
        let names = question.split { !$0.isLetter && !$0.isNumber }
            .filter { $0.first?.isUppercase == true }
            .flatMap { AdapterScope.words(String($0)) }
            .filter { !AdapterScope.functionWords.contains($0) && seen.insert($0).inserted }
        if !names.isEmpty { return names }
        let closest = nearest([question], in: neighbourhoodBank + replayBank + general, count: 2) { _ in true }
        let shape = Set(closest.flatMap(AdapterScope.words).map(AdapterScope.singular))
        return AdapterScope.words(question).filter {
            !AdapterScope.functionWords.contains($0) && !shape.contains(AdapterScope.singular($0)) && seen.insert($0).inserted
        }
    }
}
