import ArgumentParser
import Foundation
import JSON
import Postgres

/// `honectl review list|answer` — the confidence review queue (`hone.review_queue`):
/// completions the model was unsure of, until a rating or a correction answers them.
struct Review: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Low-confidence completions waiting for review; answering one sends it to learning.",
        subcommands: [List.self, Answer.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Waiting completions, least confident first.")
        @OptionGroup var options: OperatorOptions
        @Option(help: "Only this adapter's.") var adapter: String?
        @Option(help: "Show at most this many.") var limit = 50

        func run() async throws {
            try await options.run { registry, _ in
                let rows = try await registry.pool.query("""
                    SELECT completion_id, adapter, version, created_at, confidence::float8 AS confidence,
                           lowest_token_probability::float8 AS lowest, threshold::float8 AS threshold,
                           coalesce((SELECT m.value->>'content' FROM jsonb_array_elements(messages) WITH ORDINALITY AS m(value, n)
                                     WHERE m.value->>'role' = 'user' ORDER BY m.n DESC LIMIT 1), '') AS prompt, response
                    FROM hone.review_queue
                    WHERE \(adapter)::text IS NULL OR adapter = \(adapter)
                    ORDER BY confidence, created_at LIMIT \(limit)
                    """)
                struct Item { let id, adapter, prompt, response: String; let version: Int?; let created: Date; let confidence, lowest, threshold: Double }
                let items = try rows.map { row in
                    Item(id: try row.decode("completion_id"), adapter: try row.decode("adapter"), prompt: try row.decode("prompt"),
                         response: try row.decode("response"), version: try row.decodeIfPresent("version"), created: try row.decode("created_at"),
                         confidence: try row.decode("confidence"), lowest: try row.decode("lowest"), threshold: try row.decode("threshold"))
                }
                if options.json {
                    Output.json(.array(items.map { i in
                        .object(["completion_id": .string(i.id), "adapter": .string(i.adapter), "version": i.version.map { .int($0) } ?? .null,
                                 "created_at": .string(Output.time(i.created)), "confidence": .double(i.confidence),
                                 "lowest_token_probability": .double(i.lowest), "threshold": .double(i.threshold),
                                 "prompt": .string(i.prompt), "response": .string(i.response)])
                    }))
                    return
                }
                func clip(_ s: String) -> String {
                    let line = s.replacingOccurrences(of: "\n", with: " ")
                    return line.count > 48 ? String(line.prefix(47)) + "…" : line
                }
                print(Output.table(["COMPLETION", "ADAPTER", "VERSION", "CONFIDENCE", "LOWEST", "CREATED", "PROMPT", "RESPONSE"], items.map { i in
                    [i.id, i.adapter, Output.version(i.version), String(format: "%.3f", i.confidence), String(format: "%.3f", i.lowest),
                     Output.time(i.created), clip(i.prompt), clip(i.response)]
                }), terminator: "")
            }
        }
    }

    struct Answer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Answer a waiting completion with a correction or a rating, through hone.feedback (as an application would).")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "The completion id (from review list).") var completion: String
        @Option(help: "The answer it should have given.") var correction: String?
        @Option(help: "1 (thumbs up) or -1 (thumbs down).") var rating: Int?

        func validate() throws {
            guard (correction == nil) != (rating == nil) else { throw ValidationError("give --correction or --rating, not both or neither") }
        }

        func run() async throws {
            try await options.run { registry, _ in
                let rows = try await registry.pool.query("""
                    INSERT INTO hone.feedback (completion_id, adapter, correction, rating)
                    SELECT \(completion), adapter, \(correction), \(rating)::smallint FROM hone.completions WHERE id = \(completion)
                    RETURNING id
                    """)
                guard let row = rows.first else { throw Output.Failure("no logged completion \(completion)") }
                let id: Int = try row.decode("id")
                if options.json { Output.json(.object(["feedback_id": .int(id)])) } else { print("feedback \(id) sent to learning") }
            }
        }
    }
}
