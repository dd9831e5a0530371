import Foundation
import Synchronization
import Tensor

/// What `/metrics` reports, in Prometheus' text format (version 0.0.4): request counts by
/// endpoint and status, tokens, latency and time-to-first-token histograms, the version each
/// model id serves, swaps, the scheduler's load and the completion log's health.
public final class ServerMetrics: Sendable {
    /// Upper bounds (seconds) of the latency histograms' buckets.
    static let buckets: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

    struct State {
        var requests: [String: Int] = [:]       // "endpoint\u{0}status" → count
        var promptTokens = 0
        var completionTokens = 0
        var latency: [String: PrometheusHistogram] = [:]  // by endpoint
        var firstToken = PrometheusHistogram(bounds: ServerMetrics.buckets)
        /// The latest time-to-first-token figures, for the status page's percentiles.
        var recentFirstTokens: [Double] = []
        /// (when, tokens) of completions finished in the last minute, for throughput.
        var recentTokens: [(at: ContinuousClock.Instant, tokens: Int)] = []
    }

    /// How many recent time-to-first-token figures the status page's percentiles cover.
    static let recentFirstTokenCount = 1000

    private let state = Mutex(State())
    /// What the process computes on, for `hone_build_info`.
    private let compute = CPUEnvironment.current

    public init() {}

    /// A finished request: its endpoint (`/v1/chat/completions`), HTTP status and duration.
    public func request(endpoint: String, status: Int, seconds: Double) {
        state.withLock { s in
            s.requests["\(endpoint)\u{0}\(status)", default: 0] += 1
            s.latency[endpoint, default: PrometheusHistogram(bounds: Self.buckets)].observe(seconds)
        }
    }

    /// Tokens of one answered request.
    public func tokens(prompt: Int, completion: Int) {
        state.withLock { s in
            s.promptTokens += prompt
            s.completionTokens += completion
            let now = ContinuousClock.now
            s.recentTokens.append((now, completion))
            s.recentTokens.removeAll { now - $0.at > .seconds(60) }
        }
    }

    /// Seconds from a request's arrival to its first generated token.
    public func firstToken(seconds: Double) {
        state.withLock { s in
            s.firstToken.observe(seconds)
            s.recentFirstTokens.append(seconds)
            if s.recentFirstTokens.count > Self.recentFirstTokenCount { s.recentFirstTokens.removeFirst() }
        }
    }

    /// Serving at a glance, for the status page.
    public func summary(inFlight: Int, schedulerLoad: Int) -> ServingSummary {
        state.withLock { s in
            let now = ContinuousClock.now
            let recent = s.recentTokens.filter { now - $0.at <= .seconds(60) }
            let sorted = s.recentFirstTokens.sorted()
            func percentile(_ p: Double) -> Double? {
                sorted.isEmpty ? nil : sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
            }
            return ServingSummary(
                requests: s.requests.values.reduce(0, +), promptTokens: s.promptTokens, completionTokens: s.completionTokens,
                completionTokensPerSecond: Double(recent.reduce(0) { $0 + $1.tokens }) / 60,
                firstTokenSeconds: (percentile(0.5), percentile(0.9), percentile(0.99)), firstTokenSamples: sorted.count,
                inFlight: inFlight, schedulerLoad: schedulerLoad)
        }
    }

    /// Gauges read at scrape time from the parts that own them.
    public struct Gauges: Sendable {
        /// (model id, version) pairs served now.
        public var versions: [(model: String, version: String)] = []
        /// Each served adapter's shards and the bytes their weights hold.
        public var adapterWeights: [(adapter: String, shards: Int, bytes: Int)] = []
        public var swaps = 0
        /// Versions refused (checksum, shape or base model), the served one kept.
        public var refusals = 0
        /// Sequences decoding or waiting for a place.
        public var schedulerLoad = 0
        /// Requests being answered.
        public var inFlight = 0
        /// Prompt tokens whose keys and values came from the prefix cache, and prompt tokens
        /// run through the model (`PrefixCache.counts`).
        public var promptPrefix: (reused: Int, computed: Int) = (0, 0)
        /// Completion log: rows written, dropped, failed flushes (nil: no database).
        public var completionLog: (written: Int, dropped: Int, failures: Int)?
        /// CPU seconds used and waited for, per class of work.
        public var compute: [WorkClass: ComputeUsage] = [:]
        public init() {}
    }

    /// The exposition text.
    public func render(_ gauges: Gauges) -> String {
        let s = state.withLock { $0 }
        var out = PrometheusText()
        func family(_ name: String, _ type: String, _ help: String) { out.family(name, type, help) }
        func sample(_ name: String, _ labels: [(String, String)], _ value: Double) { out.sample(name, labels, value) }
        func histogram(_ name: String, _ h: PrometheusHistogram, _ labels: [(String, String)]) { out.histogram(name, h, labels) }
        family("hone_build_info", "gauge", "1, labelled with the kernel level in use, the highest the CPU runs, OpenBLAS's core type and the CPU.")
        sample("hone_build_info", [("kernels", compute.kernelLevel.description), ("cpu_kernels", compute.cpuLevel.description),
                                   ("blas_core_type", compute.blasCoreType), ("cpu", compute.model)], 1)
        family("hone_compute_busy_seconds_total", "counter", "CPU seconds the threads of each class of work (serving, learning) ran.")
        for work in WorkClass.allCases { sample("hone_compute_busy_seconds_total", [("class", work.rawValue)], gauges.compute[work]?.busySeconds ?? 0) }
        family("hone_compute_wait_seconds_total", "counter", "Seconds the threads of each class of work were ready to run but waited for a core.")
        for work in WorkClass.allCases { sample("hone_compute_wait_seconds_total", [("class", work.rawValue)], gauges.compute[work]?.waitSeconds ?? 0) }
        family("hone_requests_total", "counter", "HTTP requests answered, by endpoint and status.")
        for key in s.requests.keys.sorted() {
            let parts = key.split(separator: "\u{0}")
            sample("hone_requests_total", [("endpoint", String(parts[0])), ("status", String(parts[1]))], Double(s.requests[key]!))
        }
        family("hone_tokens_total", "counter", "Prompt and completion tokens of answered requests.")
        sample("hone_tokens_total", [("kind", "prompt")], Double(s.promptTokens))
        sample("hone_tokens_total", [("kind", "completion")], Double(s.completionTokens))
        family("hone_request_duration_seconds", "histogram", "Time from a request's arrival to its last byte.")
        for endpoint in s.latency.keys.sorted() { histogram("hone_request_duration_seconds", s.latency[endpoint]!, [("endpoint", endpoint)]) }
        family("hone_time_to_first_token_seconds", "histogram", "Time from a request's arrival to its first generated token.")
        histogram("hone_time_to_first_token_seconds", s.firstToken, [])
        family("hone_active_version", "gauge", "1 for the version each model id answers with.")
        for (model, version) in gauges.versions { sample("hone_active_version", [("model", model), ("version", version)], 1) }
        family("hone_adapter_shards", "gauge", "Shards each served adapter holds (one per accepted batch of corrections still routed to, and its general shard).")
        for a in gauges.adapterWeights { sample("hone_adapter_shards", [("adapter", a.adapter)], Double(a.shards)) }
        family("hone_adapter_weight_bytes", "gauge", "Bytes of memory each served adapter's weights hold.")
        for a in gauges.adapterWeights { sample("hone_adapter_weight_bytes", [("adapter", a.adapter)], Double(a.bytes)) }
        family("hone_swaps_total", "counter", "Adapter versions installed since start.")
        sample("hone_swaps_total", [], Double(gauges.swaps))
        family("hone_version_refusals_total", "counter", "Adapter versions this replica refused to serve (bad checksum, shape or base model); it kept the one it served.")
        sample("hone_version_refusals_total", [], Double(gauges.refusals))
        family("hone_scheduler_sequences", "gauge", "Sequences decoding or waiting for a place in the batch.")
        sample("hone_scheduler_sequences", [], Double(gauges.schedulerLoad))
        family("hone_prompt_prefill_tokens_total", "counter", "Prompt tokens prefilled: reused (keys and values of a cached prefix) or computed.")
        sample("hone_prompt_prefill_tokens_total", [("source", "reused")], Double(gauges.promptPrefix.reused))
        sample("hone_prompt_prefill_tokens_total", [("source", "computed")], Double(gauges.promptPrefix.computed))
        family("hone_requests_in_flight", "gauge", "Requests being answered.")
        sample("hone_requests_in_flight", [], Double(gauges.inFlight))
        if let log = gauges.completionLog {
            family("hone_completion_log_rows_total", "counter", "Completion log rows written to, or dropped before, hone.completions.")
            sample("hone_completion_log_rows_total", [("outcome", "written")], Double(log.written))
            sample("hone_completion_log_rows_total", [("outcome", "dropped")], Double(log.dropped))
            family("hone_completion_log_failures_total", "counter", "Failed writes to hone.completions (the database is slow or down).")
            sample("hone_completion_log_failures_total", [], Double(log.failures))
        }
        ProcessMetrics.current()?.render(into: &out)
        return out.text
    }
}

/// Serving at a glance: totals since start, throughput over the last minute, and
/// time-to-first-token percentiles over the latest requests.
public struct ServingSummary: Sendable {
    public var requests: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var completionTokensPerSecond: Double
    /// p50, p90 and p99 of the latest `firstTokenSamples` requests (nil: none yet).
    public var firstTokenSeconds: (p50: Double?, p90: Double?, p99: Double?)
    public var firstTokenSamples: Int
    public var inFlight: Int
    public var schedulerLoad: Int
}

/// What the server's `/metrics` and `/status` show but do not own: the daemon's learner,
/// queue and registry. The server stays free of the database; the daemon supplies this.
public protocol OperatorReport: Sendable {
    /// Prometheus text of the families this report owns, appended to the server's.
    func metricsText() async -> String
    /// The status page's HTML.
    func statusPage(serving: ServingSummary) async -> String
}
