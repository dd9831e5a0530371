import Foundation
import Server
import Synchronization

/// What this replica's learner is doing now and has done since start: its phase and
/// progress (for `/status`), and the histograms of its updates and of freshness (for
/// `/metrics`). The learner and the version watcher write it; the report reads it.
final class LearnerActivity: Sendable {
    /// Where an update is. `training` covers the optimizer steps and the held-out checks
    /// that run beside them; `gate` the candidate's drift, locality and check passes.
    enum Phase: String, CaseIterable, Sendable {
        case idle, references, examples, training, gate, recording
    }

    /// The learner's state at one moment.
    struct Now: Sendable {
        var phase: Phase = .idle
        var adapter: String?
        var jobs = 0
        var step = 0
        var maxSteps = 0
        var lastLoss: Double?
        var phaseStarted = Date()
        var updateStarted: Date?
    }

    /// Outcomes an update ends with, for `hone_learner_updates_total`: `superseded` when an
    /// operator changed the active version while it trained (its jobs run again).
    enum Outcome: String, CaseIterable, Sendable {
        case accepted, rejected, nothingToTrain = "nothing_to_train", superseded, failed
    }

    private struct State {
        var now = Now()
        var outcomes: [Outcome: Int] = [:]
        var duration = PrometheusHistogram(bounds: [5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600])
        var steps = PrometheusHistogram(bounds: [1, 2, 4, 8, 16, 32, 64, 128, 256])
        var freshness = PrometheusHistogram(bounds: [5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200])
    }
    private let state = Mutex(State())

    var now: Now { state.withLock { $0.now } }

    /// Enters `phase` (for `adapter`, when it starts an update).
    func enter(_ phase: Phase, adapter: String? = nil, jobs: Int? = nil, maxSteps: Int? = nil) {
        state.withLock { s in
            if phase == .idle {
                s.now = Now()
                return
            }
            if let adapter, s.now.adapter != adapter || s.now.updateStarted == nil {
                s.now = Now(adapter: adapter, updateStarted: Date())
            }
            if let jobs { s.now.jobs = jobs }
            if let maxSteps { s.now.maxSteps = maxSteps }
            s.now.phase = phase
            s.now.phaseStarted = Date()
        }
    }

    /// An optimizer step finished.
    func stepped(_ step: Int, loss: Double) {
        state.withLock { s in
            s.now.step = step
            s.now.lastLoss = loss
        }
    }

    /// An update ended: its outcome, wall seconds and optimizer steps (nil: it did not train).
    func finished(_ outcome: Outcome, seconds: Double, steps: Int?) {
        state.withLock { s in
            s.outcomes[outcome, default: 0] += 1
            s.duration.observe(seconds)
            if let steps { s.steps.observe(Double(steps)) }
        }
    }

    /// Seconds from a submission's INSERT to this replica serving the version trained on it.
    func served(afterSeconds seconds: [Double]) {
        state.withLock { s in for value in seconds { s.freshness.observe(value) } }
    }

    /// This activity's `/metrics` families.
    func render(into out: inout PrometheusText) {
        let s = state.withLock { $0 }
        out.family("hone_learner_phase", "gauge", "1 for the phase this replica's learner is in (idle, references, examples, training, gate, recording).")
        for phase in Phase.allCases { out.sample("hone_learner_phase", [("phase", phase.rawValue)], s.now.phase == phase ? 1 : 0) }
        out.family("hone_learner_step", "gauge", "The optimizer step of the update running now (0: none).")
        out.sample("hone_learner_step", [], Double(s.now.step))
        out.family("hone_learner_updates_total", "counter", "Updates this replica's learner ended, by outcome.")
        for outcome in Outcome.allCases { out.sample("hone_learner_updates_total", [("outcome", outcome.rawValue)], Double(s.outcomes[outcome] ?? 0)) }
        out.family("hone_learner_update_duration_seconds", "histogram", "Wall time of this replica's updates, from making examples to the commit.")
        out.histogram("hone_learner_update_duration_seconds", s.duration)
        out.family("hone_learner_update_steps", "histogram", "Optimizer steps of this replica's updates that trained.")
        out.histogram("hone_learner_update_steps", s.steps)
        out.family("hone_freshness_seconds", "histogram", "Seconds from a submission's INSERT to this replica serving the version trained on it.")
        out.histogram("hone_freshness_seconds", s.freshness)
    }
}
