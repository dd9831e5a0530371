import Foundation
import Learning
import Postgres
import Server

/// `/status`: one HTML page, no script, that refreshes itself every few seconds. Tables are
/// formatted by the SQL that reads them; the curves are inline SVG.
extension OperationsReport {
    /// Seconds between the page's refreshes.
    static let refreshSeconds = 5
    /// Versions shown per adapter, newest first; their curves and items with them.
    static let versionsShown = 8

    func statusPage(serving: ServingSummary) async -> String {
        var page = StatusHTML()
        page.header(replica: replica.id)
        page.serving(serving)
        page.learner(activity.now)
        do {
            try await read { db in try await databaseSections(db, into: &page) }
        } catch {
            page.banner("The database cannot be read (\(error)); serving goes on. Queue, versions and curves return when it does.")
        }
        return page.finish()
    }

    private func databaseSections(_ db: PostgresConnection, into page: inout StatusHTML) async throws {
        let texts = { (rows: PostgresRows, columns: [String]) throws -> [[String]] in
            try rows.map { row in try columns.map { try row.decodeIfPresent($0, as: String.self) ?? "" } }
        }
        let adapterColumns = ["name", "active", "flags", "threshold", "owner", "pending", "low", "review"]
        let adapters = try texts(try await db.query("""
            SELECT a.name, coalesce('v' || a.active_version, 'base model') AS active,
                   concat_ws(', ', CASE WHEN a.pinned THEN 'pinned' END, CASE WHEN a.paused THEN 'paused' END) AS flags,
                   a.review_threshold::text AS threshold, coalesce(a.owner_role, 'shared') AS owner,
                   (SELECT count(*) FROM hone.jobs j WHERE j.adapter = a.name
                      AND j.state IN ('available', 'scheduled', 'running', 'retryable'))::text AS pending,
                   coalesce(to_char(100 * (SELECT avg((c.confidence < a.review_threshold)::int) FROM hone.completions c
                      WHERE c.adapter = a.name AND c.confidence IS NOT NULL
                        AND c.created_at > now() - \(Self.confidenceWindow)::interval), 'FM990.0') || ' %', '-') AS low,
                   (SELECT count(*) FROM hone.review_queue q WHERE q.adapter = a.name)::text AS review
            FROM hone.adapters a ORDER BY a.name
            """), adapterColumns)
        page.section("Adapters", id: "adapters") {
            $0.table(id: "adapters-table", ["adapter", "serving", "state", "review below", "owner", "pending jobs",
                                            "low confidence (\(Self.confidenceWindow))", "waiting for review"], adapters)
        }
        let queue = try texts(try await db.query("""
            SELECT coalesce(adapter, '-') AS adapter, kind, state::text AS state, jobs::text AS jobs,
                   coalesce(to_char(now() - oldest_due, 'HH24:MI:SS'), '-') AS oldest
            FROM hone.queue_depth ORDER BY 1, 2, 3
            """), ["adapter", "kind", "state", "jobs", "oldest"])
        page.section("Queue", id: "queue") {
            $0.table(id: "queue-table", ["adapter", "kind", "state", "jobs", "oldest due, waiting"], queue,
                     empty: "No unfinished jobs.")
        }

        let versionRows = try await db.query("""
            SELECT * FROM (
                SELECT v.adapter, v.version, v.version::text AS number, v.status, coalesce('v' || v.parent_version, '-') AS parent,
                       to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS created,
                       cardinality(v.job_ids)::text AS jobs, v.examples::text AS examples,
                       coalesce(v.metrics->>'steps', '-') AS steps,
                       coalesce(to_char((v.metrics->>'anchor_nll_rise_bits')::float8, 'FM990.0000'), '-') AS nll,
                       coalesce(to_char((v.metrics->>'kl_bits')::float8, 'FM990.0000'), '-') AS kl,
                       coalesce((SELECT to_char(100 * avg((c.confidence < a.review_threshold)::int), 'FM990.0') || ' % of ' || count(*)
                                 FROM hone.completions c JOIN hone.adapters a ON a.name = c.adapter
                                 WHERE c.adapter = v.adapter AND c.version = v.version AND c.confidence IS NOT NULL
                                 HAVING count(*) > 0), '-') AS low,
                       coalesce(v.reason, '') AS reason,
                       row_number() OVER (PARTITION BY v.adapter ORDER BY v.version DESC) AS rank
                FROM hone.model_versions v) shown
            WHERE rank <= \(Self.versionsShown) ORDER BY adapter, version DESC
            """)
        var versions: [String: [[String]]] = [:]
        for row in versionRows {
            versions[try row.decode("adapter"), default: []].append(
                try ["number", "status", "parent", "created", "jobs", "examples", "steps", "nll", "kl", "low", "reason"]
                    .map { try row.decodeIfPresent($0, as: String.self) ?? "" })
        }
        var curves: [String: [CurvePoint]] = [:]
        for row in try await db.query("""
            SELECT s.adapter || '@v' || s.version AS id, s.step, s.loss, s.grad_norm, s.learning_rate, s.held_out_passed, s.held_out_checks
            FROM hone.version_steps s
            WHERE s.version > coalesce((SELECT max(version) FROM hone.model_versions v WHERE v.adapter = s.adapter), 0) - \(Self.versionsShown)
            ORDER BY s.adapter, s.version, s.step
            """) {
            let passed: Int? = try row.decodeIfPresent("held_out_passed"), checks: Int? = try row.decodeIfPresent("held_out_checks")
            curves[try row.decode("id"), default: []].append(CurvePoint(
                step: try row.decode("step"), loss: try row.decode("loss"), gradNorm: try row.decode("grad_norm"),
                learningRate: try row.decode("learning_rate"), heldOut: passed.flatMap { p in checks.map { (p, $0) } }))
        }
        var items: [String: [[String]]] = [:]
        for row in try await db.query("""
            SELECT s.adapter, s.version::text AS version, s.kind || ' ' || s.id AS item, s.status,
                   coalesce(s.learned, '-') AS learned,
                   CASE WHEN (s.held_out->>'checks')::int > 0
                        THEN (s.held_out->>'passed_before') || ' → ' || (s.held_out->>'passed_after') || ' of ' || (s.held_out->>'checks')
                        ELSE '-' END AS held_out
            FROM hone.submission_status s
            WHERE s.version > coalesce((SELECT max(version) FROM hone.model_versions v WHERE v.adapter = s.adapter), 0) - \(Self.versionsShown)
            ORDER BY s.adapter, s.version DESC, s.kind, s.id
            """) {
            items[try row.decode("adapter"), default: []].append(try ["version", "item", "status", "learned", "held_out"]
                .map { try row.decodeIfPresent($0, as: String.self) ?? "" })
        }
        var events: [String: [[String]]] = [:]
        for row in try await db.query("""
            SELECT * FROM (
                SELECT e.adapter, to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS at, e.action,
                       CASE WHEN e.from_version IS NULL AND e.to_version IS NULL THEN '-'
                            ELSE coalesce('v' || e.from_version, 'base') || ' → ' || coalesce('v' || e.to_version, 'base') END AS change,
                       e.actor, coalesce(e.reason, '') AS reason,
                       row_number() OVER (PARTITION BY e.adapter ORDER BY e.id DESC) AS rank
                FROM hone.adapter_events e) latest
            WHERE rank <= 20 ORDER BY adapter, rank
            """) {
            events[try row.decode("adapter"), default: []].append(try ["at", "action", "change", "actor", "reason"]
                .map { try row.decodeIfPresent($0, as: String.self) ?? "" })
        }
        for adapter in adapters.map({ $0[0] }) {
            page.section("Adapter \(adapter)", id: "adapter-\(adapter)") { p in
                p.heading("Versions (newest first)")
                p.table(id: "versions-\(adapter)", ["version", "gate", "parent", "created (UTC)", "jobs", "examples", "steps",
                                                    "anchor NLL rise (bits)", "KL (bits)", "low confidence", "reason"],
                        versions[adapter] ?? [], empty: "No version yet: the base model answers.", rowClass: { $0[1] })
                let shown = (versions[adapter] ?? []).compactMap { row in curves["\(adapter)@v\(row[0])"].map { (row[0], $0) } }
                if !shown.isEmpty {
                    p.heading("Training curves: loss (blue) and gradient norm (orange) per step; held-out passes marked")
                    p.curves(adapter: adapter, shown)
                }
                p.heading("Items learned per version, with their held-out checks (parent → candidate)")
                p.table(id: "items-\(adapter)", ["version", "item", "outcome", "learned", "held-out passes"], items[adapter] ?? [],
                        empty: "No submission trained yet.")
                p.heading("Events: who activated what, and why")
                p.table(id: "events-\(adapter)", ["at (UTC)", "action", "change", "by", "reason"], events[adapter] ?? [])
            }
        }
    }
}

/// The page as it is written, with escaping in one place.
struct StatusHTML {
    private(set) var html = ""

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    mutating func header(replica: String) {
        let now = ISO8601DateFormatter().string(from: Date())
        html += """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta http-equiv="refresh" content="\(OperationsReport.refreshSeconds)">
            <title>Hone status</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
            h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
            h3 { font-size: 1em; margin: 1em 0 .3em; color: #444; }
            table { border-collapse: collapse; margin: .3em 0; } th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
            th { background: #f4f4f4; } tr.rejected td { color: #a33; } tr.accepted td:nth-child(2) { color: #272; }
            .figures { display: flex; gap: 2em; flex-wrap: wrap; } .figure b { display: block; font-size: 1.3em; }
            .banner { background: #fee; border: 1px solid #d99; padding: .5em; } .curves { display: flex; flex-wrap: wrap; gap: 1em; }
            svg.curve { border: 1px solid #ddd; background: #fcfcfc; } .muted { color: #777; }
            </style></head><body>
            <h1>Hone status</h1>
            <p class="muted">Replica \(Self.escape(replica)) · \(now) · refreshes every \(OperationsReport.refreshSeconds) s</p>

            """
    }

    mutating func banner(_ text: String) { html += "<p class=\"banner\" id=\"database-error\">\(Self.escape(text))</p>\n" }

    mutating func heading(_ text: String) { html += "<h3>\(Self.escape(text))</h3>\n" }

    mutating func section(_ title: String, id: String, _ body: (inout StatusHTML) -> Void) {
        html += "<section id=\"\(Self.escape(id))\"><h2>\(Self.escape(title))</h2>\n"
        body(&self)
        html += "</section>\n"
    }

    private mutating func figures(_ id: String, _ items: [(String, String)]) {
        html += "<div class=\"figures\" id=\"\(id)\">"
        for (label, value) in items {
            html += "<div class=\"figure\" data-figure=\"\(Self.escape(label))\"><b>\(Self.escape(value))</b>\(Self.escape(label))</div>"
        }
        html += "</div>\n"
    }

    mutating func serving(_ s: ServingSummary) {
        func seconds(_ v: Double?) -> String { v.map { String(format: "%.3f s", $0) } ?? "-" }
        section("Serving", id: "serving") { p in
            p.figures("serving-figures", [
                ("completion tokens/s (last minute)", String(format: "%.1f", s.completionTokensPerSecond)),
                ("time to first token p50", seconds(s.firstTokenSeconds.p50)),
                ("p90", seconds(s.firstTokenSeconds.p90)),
                ("p99 (latest \(s.firstTokenSamples) requests)", seconds(s.firstTokenSeconds.p99)),
                ("requests in flight", "\(s.inFlight)"), ("sequences decoding or waiting", "\(s.schedulerLoad)"),
                ("requests since start", "\(s.requests)"), ("completion tokens since start", "\(s.completionTokens)"),
            ])
        }
    }

    mutating func learner(_ now: LearnerActivity.Now) {
        section("Learner", id: "learner") { p in
            var items = [("phase", now.phase.rawValue)]
            if let adapter = now.adapter {
                items.append(("adapter", adapter))
                items.append(("jobs in this update", "\(now.jobs)"))
            }
            if now.phase == .training || now.phase == .gate {
                items.append(("step", now.maxSteps > 0 ? "\(now.step) of at most \(now.maxSteps)" : "\(now.step)"))
                if let loss = now.lastLoss { items.append(("last loss", String(format: "%.4f", loss))) }
            }
            if now.phase != .idle {
                items.append(("in this phase", String(format: "%.0f s", Date().timeIntervalSince(now.phaseStarted))))
            }
            if let started = now.updateStarted {
                items.append(("update running", String(format: "%.0f s", Date().timeIntervalSince(started))))
            }
            p.figures("learner-figures", items)
        }
    }

    mutating func table(id: String, _ headers: [String], _ rows: [[String]], empty: String = "None.",
                        rowClass: ([String]) -> String? = { _ in nil }) {
        guard !rows.isEmpty else {
            html += "<p class=\"muted\" id=\"\(Self.escape(id))\">\(Self.escape(empty))</p>\n"
            return
        }
        html += "<table id=\"\(Self.escape(id))\"><thead><tr>" + headers.map { "<th>\(Self.escape($0))</th>" }.joined() + "</tr></thead><tbody>\n"
        for row in rows {
            let cls = rowClass(row).map { " class=\"\(Self.escape($0))\"" } ?? ""
            html += "<tr\(cls)>" + row.map { "<td>\(Self.escape($0))</td>" }.joined() + "</tr>\n"
        }
        html += "</tbody></table>\n"
    }

    /// One small chart per version: loss and gradient norm, each scaled to its own range.
    mutating func curves(adapter: String, _ shown: [(version: String, points: [CurvePoint])]) {
        let width = 300.0, height = 110.0, pad = 22.0
        html += "<div class=\"curves\">\n"
        for (version, points) in shown {
            let id = "\(adapter)@v\(version)"
            let steps = Double(max((points.map(\.step).max() ?? 1) - 1, 1))
            func x(_ step: Int) -> Double { pad + (width - 2 * pad) * Double(step - 1) / steps }
            func polyline(_ values: [Double], _ cls: String, _ color: String) -> String {
                let lo = values.min() ?? 0, hi = values.max() ?? 1, span = hi - lo > 0 ? hi - lo : 1
                let coordinates = zip(points, values).map { point, v in
                    String(format: "%.1f,%.1f", x(point.step), height - pad - (height - 2 * pad) * (v - lo) / span)
                }
                return "<polyline class=\"\(cls)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(coordinates.joined(separator: " "))\"/>"
            }
            let losses = points.map(\.loss), norms = points.map(\.gradNorm)
            let first = losses.first ?? 0, last = losses.last ?? 0
            var svg = "<svg class=\"curve\" data-version=\"\(Self.escape(id))\" data-steps=\"\(points.count)\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">"
            svg += "<title>\(Self.escape(id)): loss \(String(format: "%.3f", first)) → \(String(format: "%.3f", last)) over \(points.count) steps</title>"
            svg += polyline(losses, "loss", "#2563eb") + polyline(norms, "grad-norm", "#ea580c")
            for point in points {
                guard let (passed, checks) = point.heldOut else { continue }
                svg += "<circle class=\"held-out\" cx=\"\(String(format: "%.1f", x(point.step)))\" cy=\"\(Int(pad / 2))\" r=\"3\" fill=\"\(passed == checks ? "#16a34a" : "#9ca3af")\"><title>step \(point.step): \(passed) of \(checks) held-out probes pass</title></circle>"
            }
            svg += "<text x=\"\(Int(pad))\" y=\"\(Int(height - 5))\" font-size=\"10\">v\(Self.escape(version)) · \(points.count) steps · loss \(String(format: "%.3f", first)) → \(String(format: "%.3f", last)) · lr \(String(format: "%.2g", points.last?.learningRate ?? 0))</text>"
            html += svg + "</svg>\n"
        }
        html += "</div>\n"
    }

    mutating func finish() -> String {
        html += "</body></html>\n"
        return html
    }
}
