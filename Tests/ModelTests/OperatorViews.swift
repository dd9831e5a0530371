import Foundation
import JSON
import BuiltTools
import Testing

/// What an operator sees of a daemon that has learned: the training curve through honectl,
/// the review queue, `/metrics` as Prometheus' own checker reads it, and `/status` as a real
/// headless Chromium renders it (the screenshot is kept for a person to look at).
enum OperatorViews {
    /// Where the status page's screenshot is written: `.build/artifacts/status-page.png`.
    static let screenshot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../.build/artifacts/status-page.png").standardized.path

    static let chromium = BuiltTool(system: ["/usr/bin/chromium-headless-shell", "/usr/bin/chromium", "/usr/bin/chromium-browser"])
    static let promtool = BuiltTool(system: ["/usr/bin/promtool"])

    /// The value of one series in exposition text (`name{labels}` exactly as rendered).
    static func value(_ series: String, in text: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    /// `learner` is the replica that trained `facts` (versions `facts`, `active` serving);
    /// `other` was rolled back; the `answered` completions were corrected and left review.
    static func check(learner: ServerTests.LiveServer, url: String, facts: [Int], active: Int, answered: [String]) async throws {
        let ctl = BuiltTool("honectl")!
        let env = ["HONE_DATABASE_URL": url]

        // The curve of every trained version: one row per step, finite figures, held-out passes where checked.
        for version in facts {
            let shown = try ctl.run(["versions", "show", "facts", "\(version)", "--json"], environment: env)
            let steps = try JSONValue(parsing: shown.out)["metrics"]?["steps"]?.intValue
            let curve = try ctl.run(["versions", "show", "facts", "\(version)", "--steps", "--json"], environment: env)
            #expect(curve.status == 0, "\(curve.err)")
            let points = try JSONValue(parsing: curve.out).arrayValue ?? []
            #expect(points.count == steps, "facts@v\(version): \(points.count) curve points for \(steps ?? -1) steps")
            #expect(points.enumerated().allSatisfy { i, p in p["step"]?.intValue == i + 1 && (p["loss"]?.doubleValue ?? .nan).isFinite
                                                    && (p["grad_norm"]?.doubleValue ?? .nan) > 0 && p["learning_rate"]?.doubleValue != nil })
            #expect(points.contains { $0["held_out_checks"]?.intValue ?? 0 > 0 }, "facts@v\(version) kept no held-out pass counts")
        }
        let table = try ctl.run(["versions", "show", "facts", "\(active)", "--steps"], environment: env)
        #expect(table.out.hasPrefix("STEP") || table.out.contains("STEP"), "\(table.out)")

        // The operator's review queue: both tenants' unanswered completions, none of the answered ones.
        let review = try ctl.run(["review", "list", "--json", "--limit", "1000"], environment: env)
        #expect(review.status == 0, "\(review.err)")
        let waiting = try JSONValue(parsing: review.out).arrayValue ?? []
        let waitingBy = Dictionary(grouping: waiting) { $0["adapter"]?.stringValue ?? "" }.mapValues(\.count)
        #expect(Set(waitingBy.keys).isSubset(of: ["facts", "other"]) && (waitingBy["other"] ?? 0) > 0)
        #expect(!waiting.contains { answered.contains($0["completion_id"]?.stringValue ?? "") })
        #expect(waiting.map { $0["confidence"]?.doubleValue ?? 1 }.allSatisfy { $0 < 0.55 })

        // /metrics: every learning family, accepted by promtool.
        let (status, metrics, _) = try await learner.get("/metrics")
        #expect(status == 200)
        let promtool = try #require(Self.promtool, "promtool is missing: ops/setup --test installs Debian's prometheus package")
        let checked = try promtool.run(["check", "metrics"], stdin: metrics)
        #expect(checked.status == 0, "promtool: \(checked.out)\(checked.err)")
        for family in ["hone_queue_jobs", "hone_queue_oldest_waiting_seconds", "hone_versions_total", "hone_learner_updates_total",
                       "hone_learner_update_duration_seconds", "hone_learner_update_steps", "hone_freshness_seconds",
                       "hone_low_confidence_ratio", "hone_review_queue_items", "hone_learner_phase", "hone_learner_step",
                       "hone_compute_busy_seconds_total", "hone_time_to_first_token_seconds"] {
            #expect(metrics.contains("# TYPE \(family) "), "/metrics lacks \(family)")
        }
        #expect((value(#"hone_learner_updates_total{outcome="accepted"}"#, in: metrics) ?? 0) >= 1)
        #expect(value("hone_learner_update_steps_count", in: metrics) == value("hone_learner_update_duration_seconds_count", in: metrics))
        #expect((value("hone_freshness_seconds_count", in: metrics) ?? 0) >= 1, "no freshness observed on the learner's replica")
        #expect(value(#"hone_queue_jobs{adapter="facts",kind="feedback",state="available"}"#, in: metrics) == 0)
        #expect(value(#"hone_review_queue_items{adapter="other"}"#, in: metrics) == Double(waitingBy["other"] ?? 0))
        #expect(value(#"hone_review_queue_items{adapter="facts"}"#, in: metrics) == Double(waitingBy["facts"] ?? 0))
        #expect(value(#"hone_low_confidence_ratio{adapter="facts"}"#, in: metrics) != nil)
        #expect(value(#"hone_versions_total{adapter="other",status="accepted"}"#, in: metrics) == 2)

        // /status in a real browser: the DOM after rendering, and a screenshot.
        let browser = try #require(Self.chromium, "no headless Chromium: ops/setup --test installs Debian's chromium-headless-shell")
        let page = "http://127.0.0.1:\(learner.port)/status"
        let common = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=\(NSTemporaryDirectory())hone-chromium-\(getpid())"]
        let dom = try browser.run(common + ["--dump-dom", page])
        #expect(dom.status == 0, "\(dom.err.suffix(500))")
        let html = dom.out
        for needle in [#"<section id="serving">"#, #"<section id="learner">"#, #"<section id="queue">"#, #"<section id="adapter-facts">"#,
                       #"<section id="adapter-other">"#, #"data-version="facts@v\#(active)""#, #"class="loss""#, #"class="grad-norm""#,
                       #"class="held-out""#, "v2 answered &lt;b&gt;worse&lt;/b&gt;", "<td>rollback</td>", "<td>publish</td>", "<td>learned</td>"] {
            #expect(html.contains(needle), "the rendered status page lacks \(needle)")
        }
        #expect(!html.contains("<b>worse</b>"), "an operator's reason was rendered as markup")
        #expect(html.components(separatedBy: #"<svg class="curve""#).count - 1 >= facts.count)
        try FileManager.default.createDirectory(atPath: (screenshot as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: screenshot)
        let shot = try browser.run(common + ["--window-size=1280,2400", "--screenshot=\(screenshot)", page])
        #expect(shot.status == 0, "\(shot.err.suffix(500))")
        let size = (try? FileManager.default.attributesOfItem(atPath: screenshot)[.size] as? Int) ?? 0
        #expect(size > 20_000, "the screenshot has \(size) bytes")
        print("operator views: status page screenshot at \(screenshot) (\(size) bytes)")
    }
}
