import ArgumentParser
import Foundation
import JSON
import Postgres
import Queue
import Registry

/// `honectl status [--watch]` — replicas, adapters and the queue at a glance.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replicas alive, each adapter's active version, flags, pending jobs and last gate result, and queue depth.")

    @OptionGroup var options: OperatorOptions

    @Flag(help: "Refresh every --interval seconds until interrupted.")
    var watch = false

    @Option(help: "Seconds between refreshes with --watch.")
    var interval: Double = 2

    /// A replica whose heartbeat is older than this is shown as gone.
    static let replicaTimeout = 30.0

    func run() async throws {
        try await options.run { registry, queue in
            repeat {
                let report = try await Self.report(registry.pool)
                if options.json {
                    Output.json(report)
                } else {
                    if watch && Output.isTerminal { print("\u{1B}[2J\u{1B}[H", terminator: "") }
                    print(Self.render(report), terminator: "")
                }
                if watch { try await Task.sleep(for: .seconds(interval)) }
            } while watch
        }
    }

    static func report(_ pool: PostgresPool) async throws -> JSONValue {
        let replicas = try await pool.query("""
            SELECT id, host, pid, served::text AS served, started_at, heartbeat_at,
                   extract(epoch FROM now() - heartbeat_at)::float8 AS age FROM hone.replicas ORDER BY id
            """).map { row -> JSONValue in
            let age: Double = try row.decode("age")
            return .object(["id": .string(try row.decode("id")), "pid": .int(try row.decode("pid")),
                            "served": try JSONValue(parsing: try row.decode("served", as: String.self)),
                            "heartbeat_age_s": .double((age * 10).rounded() / 10), "alive": .bool(age < replicaTimeout),
                            "started_at": Output.isoTime(try row.decode("started_at"))])
        }
        let adapters = try await pool.query("""
            SELECT adapter, active_version, pinned, paused, pending_jobs, last_version, last_status, last_reason, last_update
            FROM hone.adapter_status ORDER BY adapter
            """).map { row -> JSONValue in
            .object(["adapter": .string(try row.decode("adapter")), "active_version": Output.optional(try row.decodeIfPresent("active_version", as: Int.self)),
                     "pinned": .bool(try row.decode("pinned")), "paused": .bool(try row.decode("paused")),
                     "pending_jobs": .int(try row.decode("pending_jobs")),
                     "last_version": Output.optional(try row.decodeIfPresent("last_version", as: Int.self)),
                     "last_gate": Output.optional(try row.decodeIfPresent("last_status", as: String.self)),
                     "last_reason": Output.optional(try row.decodeIfPresent("last_reason", as: String.self)),
                     "last_update": Output.isoTime(try row.decodeIfPresent("last_update"))])
        }
        let depth = try await pool.query("""
            SELECT coalesce(adapter, '-') AS adapter, kind, state::text AS state, jobs FROM hone.queue_depth ORDER BY 1, 2, 3
            """).map { row -> JSONValue in
            .object(["adapter": .string(try row.decode("adapter")), "kind": .string(try row.decode("kind")),
                     "state": .string(try row.decode("state")), "jobs": .int(try row.decode("jobs"))])
        }
        return .object(["replicas": .array(replicas), "adapters": .array(adapters), "queue": .array(depth)])
    }

    static func render(_ report: JSONValue) -> String {
        func s(_ v: JSONValue?) -> String { Versions.figure(v) }
        var out = "REPLICAS\n"
        out += Output.table(["ID", "PID", "ALIVE", "HEARTBEAT", "SERVING"], (report["replicas"]?.arrayValue ?? []).map { r in
            let served = (r["served"].flatMap { v -> [String]? in
                guard case .object(let o) = v else { return nil }
                return o.keys.sorted().map { "\($0)=\(o[$0]?.stringValue ?? "?")" }
            } ?? []).joined(separator: " ")
            return [s(r["id"]), s(r["pid"]), r["alive"] == .bool(true) ? "yes" : "NO", "\(s(r["heartbeat_age_s"]))s ago", served]
        })
        out += "\nADAPTERS\n"
        out += Output.table(["ADAPTER", "ACTIVE", "PINNED", "PAUSED", "PENDING", "LAST", "GATE", "UPDATED", "REASON"],
                            (report["adapters"]?.arrayValue ?? []).map { a in
            [s(a["adapter"]), a["active_version"]?.intValue.map { "v\($0)" } ?? "-", a["pinned"] == .bool(true) ? "yes" : "no",
             a["paused"] == .bool(true) ? "yes" : "no", s(a["pending_jobs"]), a["last_version"]?.intValue.map { "v\($0)" } ?? "-",
             s(a["last_gate"]), s(a["last_update"]), s(a["last_reason"])]
        })
        out += "\nQUEUE\n"
        out += Output.table(["ADAPTER", "KIND", "STATE", "JOBS"], (report["queue"]?.arrayValue ?? []).map { q in
            [s(q["adapter"]), s(q["kind"]), s(q["state"]), s(q["jobs"])]
        })
        return out
    }
}

/// `honectl jobs list|show|retry|cancel|discard`.
struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and act on queue jobs.",
        subcommands: [List.self, Show.self, Retry.self, Cancel.self, Discard.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Jobs, newest first, filtered by state, kind, adapter and age.")
        @OptionGroup var options: OperatorOptions
        @Option(help: "available, scheduled, running, retryable, completed, cancelled or discarded.") var state: String?
        @Option(help: "Job kind (feedback, task, document, …).") var kind: String?
        @Option(help: "Adapter name.") var adapter: String?
        @Option(name: .customLong("older-than"), help: "Only jobs created longer ago than this, e.g. 90s, 10m, 2h, 1d.") var olderThan: String?
        @Option(help: "Most jobs to show.") var limit = 50

        func validate() throws {
            if let state, JobState(rawValue: state) == nil {
                throw ValidationError("unknown state \(state); choose among \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let olderThan { _ = try Jobs.age(olderThan) }
            guard limit > 0 else { throw ValidationError("--limit must be positive") }
        }

        func run() async throws {
            try await options.run { _, queue in
                let jobs = try await queue.jobs(state: state.flatMap(JobState.init(rawValue:)), kind: kind, adapter: adapter,
                                                olderThan: try olderThan.map(Jobs.age), limit: limit)
                if options.json {
                    Output.json(.array(jobs.map(Jobs.json)))
                } else {
                    print(Output.table(["ID", "KIND", "ADAPTER", "STATE", "ATTEMPT", "CREATED", "OUTCOME"], jobs.map { j in
                        ["\(j.id)", j.kind, j.adapter ?? "-", j.state.rawValue, "\(j.attempt)/\(j.maxAttempts)", Output.time(j.createdAt),
                         j.result?["outcome"]?.stringValue ?? j.errors.last?.error ?? ""]
                    }), terminator: "")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One job with its payload, result and every attempt's error.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Job id.") var id: Int64

        func run() async throws {
            try await options.run { _, queue in
                guard let job = try await queue.job(id: id) else { throw Output.Failure("job \(id) does not exist (or was pruned)") }
                if options.json {
                    Output.json(Jobs.json(job))
                    return
                }
                var rows = [["id", "\(job.id)"], ["kind", job.kind], ["adapter", job.adapter ?? "-"], ["state", job.state.rawValue],
                            ["attempt", "\(job.attempt)/\(job.maxAttempts)"], ["created", Output.time(job.createdAt)],
                            ["scheduled", Output.time(job.scheduledAt)], ["finalized", Output.time(job.finalizedAt)],
                            ["attempted by", job.attemptedBy.joined(separator: ", ")], ["args", job.args.jsonText],
                            ["result", job.result?.jsonText ?? "-"]]
                for e in job.errors { rows.append(["error (attempt \(e.attempt))", e.error]) }
                print(Output.table(["FIELD", "VALUE"], rows), terminator: "")
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run a waiting, failed, discarded or cancelled job again now.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Job id.") var id: Int64
        func run() async throws {
            try await Jobs.act(options, id: id, verb: "retried") { try await $0.retry(id: id) }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a job that has not finished (a running one stops at its next heartbeat).")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Job id.") var id: Int64
        @Option(help: "Why, kept in the job's errors.") var reason = "cancelled by an operator"
        func run() async throws {
            try await Jobs.act(options, id: id, verb: "cancelled") { try await $0.cancel(id: id, reason: reason) }
        }
    }

    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give up on a job that has not finished, keeping the reason.")
        @OptionGroup var options: OperatorOptions
        @Argument(help: "Job id.") var id: Int64
        @Option(help: "Why, kept in the job's errors.") var reason = "discarded by an operator"
        func run() async throws {
            try await Jobs.act(options, id: id, verb: "discarded") { try await $0.discard(id: id, reason: reason) }
        }
    }

    static func act(_ options: OperatorOptions, id: Int64, verb: String, _ body: @escaping (JobQueue) async throws -> Bool) async throws {
        try await options.run { _, queue in
            guard try await body(queue) else {
                let state = try await queue.job(id: id)?.state.rawValue
                throw Output.Failure(state.map { "job \(id) is \($0); it cannot be \(verb)" } ?? "job \(id) does not exist")
            }
            if options.json { Output.json(.object(["id": .int(Int(id)), "action": .string(verb)])) } else { print("\(verb) job \(id)") }
        }
    }

    /// `90s`, `10m`, `2h`, `1d`.
    static func age(_ text: String) throws -> Duration {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last.flatMap({ units[$0] }), let n = Int64(text.dropLast()), n >= 0 else {
            throw ValidationError("age \(text) is not like 90s, 10m, 2h or 1d")
        }
        return .seconds(n * unit)
    }

    static func json(_ j: Job) -> JSONValue {
        .object(["id": .int(Int(j.id)), "kind": .string(j.kind), "adapter": Output.optional(j.adapter), "state": .string(j.state.rawValue),
                 "attempt": .int(j.attempt), "max_attempts": .int(j.maxAttempts), "args": j.args, "result": j.result ?? .null,
                 "errors": .array(j.errors.map { .object(["attempt": .int($0.attempt), "at": .string($0.at), "error": .string($0.error)]) }),
                 "created_at": Output.isoTime(j.createdAt), "finalized_at": Output.isoTime(j.finalizedAt)])
    }
}

/// `honectl feedback stats` — what became of feedback, per adapter.
struct Feedback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Feedback statistics.", subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Feedback per adapter: ratings, corrections, and outcomes (trained, dropped, rejected, …).")
        @OptionGroup var options: OperatorOptions
        @Option(help: "Adapter name.") var adapter: String?

        func run() async throws {
            try await options.run { registry, _ in
                let rows = try await registry.pool.query("""
                    SELECT f.adapter, count(*) AS total,
                           count(*) FILTER (WHERE f.rating = 1) AS thumbs_up, count(*) FILTER (WHERE f.rating = -1) AS thumbs_down,
                           count(*) FILTER (WHERE f.correction IS NOT NULL) AS corrections,
                           count(*) FILTER (WHERE s.status = 'trained') AS trained, count(*) FILTER (WHERE s.status = 'dropped') AS dropped,
                           count(*) FILTER (WHERE s.status = 'rejected') AS rejected, count(*) FILTER (WHERE s.status = 'blocked') AS blocked,
                           count(*) FILTER (WHERE s.status IN ('queued', 'running', 'retrying')) AS pending,
                           count(*) FILTER (WHERE s.status IN ('failed', 'cancelled')) AS failed
                    FROM hone.feedback f JOIN hone.submission_status s ON s.kind = 'feedback' AND s.id = f.id
                    WHERE \(adapter)::text IS NULL OR f.adapter = \(adapter)::text
                    GROUP BY f.adapter ORDER BY f.adapter
                    """)
                let columns = ["total", "thumbs_up", "thumbs_down", "corrections", "trained", "dropped", "rejected", "blocked", "pending", "failed"]
                let data: [(String, [Int])] = try rows.map { row in (try row.decode("adapter"), try columns.map { try row.decode($0) }) }
                if options.json {
                    Output.json(.array(data.map { name, counts in
                        .object(Dictionary(uniqueKeysWithValues: zip(columns, counts.map { JSONValue.int($0) })).merging(["adapter": .string(name)]) { a, _ in a })
                    }))
                } else {
                    print(Output.table(["ADAPTER"] + columns.map { $0.uppercased() }, data.map { [$0.0] + $0.1.map(String.init) }), terminator: "")
                }
            }
        }
    }
}
