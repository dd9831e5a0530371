import Foundation
import JSON
import Postgres

extension Registry {
    /// A base model's stored learner references — its answers in `hone.anchor_answers` and
    /// their distilled targets in `hone.reference_targets` — as one JSON document; nil when
    /// none are stored. A fresh database given them (`importReferences`) skips the minutes a
    /// first learner spends making them: the learner tests and `ops/chaos` share them this
    /// way through a file, made once per machine.
    public func exportReferences(baseModelSHA256 sha: String) async throws -> JSONValue? {
        let answers = try await pool.query("SELECT prompt, answer FROM hone.anchor_answers WHERE base_model_sha256 = \(sha) ORDER BY prompt")
        let targets = try await pool.query("SELECT inputs_sha256, targets FROM hone.reference_targets WHERE base_model_sha256 = \(sha) ORDER BY 1")
        guard !answers.isEmpty, !targets.isEmpty else { return nil }
        return .object([
            "base_model_sha256": .string(sha),
            "answers": .array(try answers.map { .object(["prompt": .string(try $0.decode("prompt")), "answer": .string(try $0.decode("answer"))]) }),
            "targets": .array(try targets.map {
                .object(["inputs_sha256": .string(try $0.decode("inputs_sha256")),
                         "targets": .string(Data(try $0.decode("targets", as: Bytea.self).bytes).base64EncodedString())])
            }),
        ])
    }

    /// Stores what `exportReferences` wrote (rows already present are kept).
    public func importReferences(_ document: JSONValue) async throws {
        guard let sha = document["base_model_sha256"]?.stringValue else { return }
        let answers = document["answers"]?.arrayValue ?? []
        try await pool.query("""
            INSERT INTO hone.anchor_answers (base_model_sha256, prompt, answer)
            SELECT \(sha), p, a FROM unnest(\(answers.compactMap { $0["prompt"]?.stringValue })::text[],
                                            \(answers.compactMap { $0["answer"]?.stringValue })::text[]) AS t(p, a)
            ON CONFLICT DO NOTHING
            """)
        for target in document["targets"]?.arrayValue ?? [] {
            guard let key = target["inputs_sha256"]?.stringValue, let text = target["targets"]?.stringValue,
                  let bytes = Data(base64Encoded: text) else { continue }
            try await pool.query("""
                INSERT INTO hone.reference_targets (base_model_sha256, inputs_sha256, targets)
                VALUES (\(sha), \(key), \(Bytea([UInt8](bytes)))) ON CONFLICT DO NOTHING
                """)
        }
    }

    /// Stores the references a run kept at `path` (`keepReferences`); false when there is none.
    @discardableResult
    public func importReferences(fromFile path: String) async throws -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        try await importReferences(try JSONValue(parsing: data))
        return true
    }

    /// Writes the references stored for `sha` to `path` for later runs, once: not when a
    /// file is there already, none are stored, or `complete` says they are partial.
    public func keepReferences(baseModelSHA256 sha: String, atFile path: String,
                               complete: (JSONValue) -> Bool = { _ in true }) async throws {
        guard !FileManager.default.fileExists(atPath: path),
              let document = try await exportReferences(baseModelSHA256: sha), complete(document) else { return }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(document.jsonText.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
