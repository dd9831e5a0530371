import Foundation
import Logging
import Postgres
import Registry
import BuiltTools

/// `honebench soak` (`ops/soak --minutes N`): a release `honed` (learner on, embedded
/// database) serving two streaming clients while corrections keep arriving and an operator
/// pins, unpins and rolls back, for HONE_SOAK_MINUTES (10 by default). One JSON line per
/// interval (HONE_SOAK_INTERVAL seconds, 60): the daemon's RSS, open descriptors, threads,
/// database connections, the clients' requests and latency, and the learner's progress;
/// then a summary line comparing the first and last stretch after warm-up.
enum SoakBench {
    /// One interval's readings.
    struct Reading {
        var minute: Double
        /// The median of the interval's RSS samples (one every 5 s), and their extremes: a
        /// single reading lands in whatever phase the learner is in (training peaks, idle
        /// floors), so growth is judged on medians and floors and peaks are shown beside them.
        var rssMB: Double
        var rssMinMB: Double
        var rssMaxMB: Double
        /// The C heap at the interval's end (`hone_heap_bytes`): held by the program, and free
        /// inside the allocator. Growth in the first is retention, in the second fragmentation.
        var heapInUseMB: Double
        var heapFreeMB: Double
        /// The served adapter's weights at the interval's end (`hone_adapter_weight_bytes`):
        /// memory that grows with what it learned, apart from any leak.
        var adapterMB: Double
        /// Weights kept for instant rollback beyond the served ones (`hone_adapter_rollback_cache_bytes`).
        var rollbackCacheMB: Double
        var descriptors: Int
        var threads: Int
        var connections: Int
        var ttftP50: Double
        var ttftP99: Double
        var requests: Int
        var failed: Int
    }

    static func run(logger: Logger) async throws {
        let env = ProcessInfo.processInfo.environment
        let minutes = Double(env["HONE_SOAK_MINUTES"] ?? "10") ?? 10
        let interval = Double(env["HONE_SOAK_INTERVAL"] ?? "60") ?? 60
        let daemon = try BenchDaemon(name: "soak")
        defer { daemon.stop() }
        let port = daemon.port
        for _ in 0..<600 where (try? ServeBench.stream(port: port, model: "smollm2", prompt: "Hi", origin: .now)) == nil {
            try await Task.sleep(for: .milliseconds(100))
        }
        let pool = PostgresPool(conninfo: daemon.databaseURL, size: 2, logger: logger)
        let registry = Registry(pool: pool)
        try await pool.query("SELECT hone.create_adapter('soak', \(FreshnessBench.settings)::jsonb, 'soak benchmark')")
        let facts = try Facts.load()

        let load = ServingLoad()
        let clients = Task { await load.run(port: port, clients: 2) }
        let start = ContinuousClock.now
        var readings: [Reading] = []
        var submitted = 0, actions = 0, next = 0
        var seen = (ok: 0, failed: 0, samples: 0)
        while ContinuousClock.now - start < .seconds(minutes * 60) {
            // Two corrections per interval, cycling through the facts; an operator action every
            // third: a rollback every third action (every 9 intervals), a pin and unpin otherwise.
            // A rollback makes the update in training stale, and one with a batch of 8 takes
            // longer than 3 intervals at half the machine: rolling back at every action left
            // learning stuck at 2 versions for 14 minutes (session 17).
            let batch = (0..<2).map { _ in defer { next += 1 }; return facts[next % facts.count] }
            try await pool.query("""
                INSERT INTO hone.feedback (adapter, prompt, correction)
                SELECT 'soak', q, c FROM unnest(\(batch.map(\.question))::text[], \(batch.map(\.correction))::text[]) AS t(q, c)
                """)
            submitted += batch.count
            if readings.count % 3 == 2, let record = try await registry.adapter("soak"), let active = record.activeVersion {
                let accepted = try await registry.versions(of: "soak").filter { $0.status == "accepted" && $0.version != active }
                if actions % 3 == 0, let previous = accepted.first {
                    try await pool.query("SELECT hone.activate_version('soak', \(previous.version), 'rollback', 'soak: operator rollback')")
                } else {
                    try await pool.query("SELECT hone.set_adapter_flag('soak', 'pin', 'soak: operator pin')")
                    try await pool.query("SELECT hone.set_adapter_flag('soak', 'unpin', 'soak: operator unpin')")
                }
                actions += 1
            }
            var rss: [Double] = []
            let intervalEnd = ContinuousClock.now + .seconds(interval)
            while ContinuousClock.now < intervalEnd {
                rss.append(daemon.statusField("VmRSS:") / 1024)
                try await Task.sleep(for: min(.seconds(5), intervalEnd - ContinuousClock.now))
            }
            let (counts, samples) = (load.counts.withLock { $0 }, load.samples.withLock { $0 })
            let fresh = samples.dropFirst(seen.samples).map { $0.firstToken - $0.start }
            let connections: Int = try await pool.query("""
                SELECT count(*) AS n FROM pg_stat_activity WHERE datname = 'hone' AND pid <> pg_backend_pid()
                """)[0].decode("n")
            let heapSeries = [#"hone_heap_bytes{state="in_use"}"#, #"hone_heap_bytes{state="free"}"#, #"hone_adapter_weight_bytes{adapter="soak"}"#,
                              "hone_adapter_rollback_cache_bytes"]
            let heap = ServeBench.metrics(port: port, heapSeries) ?? [:]
            let reading = Reading(minute: (ContinuousClock.now - start) / .seconds(60), rssMB: percentile(rss, 0.5),
                                  rssMinMB: rss.min() ?? 0, rssMaxMB: rss.max() ?? 0,
                                  heapInUseMB: (heap[heapSeries[0]] ?? .nan) / 1_048_576, heapFreeMB: (heap[heapSeries[1]] ?? .nan) / 1_048_576,
                                  adapterMB: (heap[heapSeries[2]] ?? 0) / 1_048_576, rollbackCacheMB: (heap[heapSeries[3]] ?? 0) / 1_048_576,
                                  descriptors: daemon.descriptors, threads: Int(daemon.statusField("Threads:")), connections: connections,
                                  ttftP50: percentile(Array(fresh), 0.5), ttftP99: percentile(Array(fresh), 0.99),
                                  requests: counts.ok - seen.ok, failed: counts.failed - seen.failed)
            seen = (counts.ok, counts.failed, samples.count)
            readings.append(reading)
            let versions = try await registry.versions(of: "soak")
            // The newest version's own figures: its update's peak RSS and the shards it serves.
            let newest = versions.first?.metrics
            emit(["bench": "soak", "minute": reading.minute, "rss_mb": reading.rssMB, "rss_min_mb": reading.rssMinMB, "rss_max_mb": reading.rssMaxMB,
                  "heap_in_use_mb": reading.heapInUseMB.rounded(), "heap_free_mb": reading.heapFreeMB.rounded(), "adapter_mb": reading.adapterMB.rounded(), "rollback_cache_mb": reading.rollbackCacheMB.rounded(),
                  "update_peak_rss_mb": newest?["rss_peak_mb"]?.doubleValue ?? .nan, "shards": newest?["shards"]?.intValue ?? 0,
                  "fds": reading.descriptors, "threads": reading.threads,
                  "db_connections": reading.connections, "requests": reading.requests, "failed": reading.failed,
                  "ttft_p50_s": reading.ttftP50, "ttft_p99_s": reading.ttftP99, "submitted": submitted, "operator_actions": actions,
                  "versions": versions.count, "accepted": versions.filter { $0.status == "accepted" }.count])
        }
        load.stop.store(true, ordering: .relaxed)
        await clients.value
        // Warm-up is the first fifth; the first and last stretches are a fifth each after it.
        let stretch = max(readings.count / 5, 1)
        let early = Array(readings.dropFirst(stretch).prefix(stretch)), late = Array(readings.suffix(stretch))
        func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }
        func growth(_ value: (Reading) -> Double) -> Double { 100 * (mean(late.map(value)) / mean(early.map(value)) - 1) }
        let rssGrowth = growth(\.rssMB)
        let p99Drift = 100 * (mean(late.map(\.ttftP99)) / mean(early.map(\.ttftP99)) - 1)
        let outcomes = try await pool.query("SELECT status, count(*) AS n FROM hone.submission_status GROUP BY 1 ORDER BY 1")
        emit(["bench": "soak_summary", "minutes": minutes, "rss_growth_pct": rssGrowth,
              "rss_floor_growth_pct": growth(\.rssMinMB), "rss_peak_growth_pct": growth(\.rssMaxMB),
              "rss_peak_mb": readings.map(\.rssMaxMB).max() ?? 0,
              "heap_in_use_growth_pct": growth(\.heapInUseMB), "heap_free_growth_pct": growth(\.heapFreeMB),
              // The same RSS growth with the adapter's weights taken out of both stretches: what
              // is left when learned shards are not counted.
              "rss_less_adapter_growth_pct": 100 * (mean(late.map { $0.rssMB - $0.adapterMB }) / mean(early.map { $0.rssMB - $0.adapterMB }) - 1),
              "adapter_mb_first": mean(early.map(\.adapterMB)), "adapter_mb_last": mean(late.map(\.adapterMB)),
              "fds_first": early.first?.descriptors ?? 0, "fds_last": late.last?.descriptors ?? 0,
              // Threads come and go with the work in flight (Dispatch's workers, one thread per
              // compute job): one reading lands anywhere in that range, so each stretch's range is
              // compared. A leak lifts the late stretch's range above the early one's.
              "threads_early_min": early.map(\.threads).min() ?? 0, "threads_early_max": early.map(\.threads).max() ?? 0,
              "threads_late_min": late.map(\.threads).min() ?? 0, "threads_late_max": late.map(\.threads).max() ?? 0,
              "rollback_cache_mb_first": mean(early.map(\.rollbackCacheMB)), "rollback_cache_mb_last": mean(late.map(\.rollbackCacheMB)),
              "db_connections_first": early.first?.connections ?? 0, "db_connections_last": late.last?.connections ?? 0,
              "ttft_p99_drift_pct": p99Drift, "requests": readings.reduce(0) { $0 + $1.requests },
              "failed": readings.reduce(0) { $0 + $1.failed }, "submitted": submitted, "operator_actions": actions,
              "outcomes": try outcomes.map { "\(try $0.decode("status", as: String.self)) \(try $0.decode("n", as: Int.self))" }.joined(separator: ", ")])
        await pool.close()
    }
}

extension BenchDaemon {
    /// A numeric field of /proc/PID/status (kB for memory fields), 0 when unreadable.
    func statusField(_ name: String) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
        return Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
    }

    /// Open file descriptors of the daemon.
    var descriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0 }
}
