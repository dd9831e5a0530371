import Foundation
import JSON

/// Pass/fail results of the same checks on the parent (before) and on the candidate (after).
public struct CheckPair: Sendable, Equatable {
    public var before: [Bool]
    public var after: [Bool]

    public init(before: [Bool] = [], after: [Bool] = []) {
        precondition(before.count == after.count, "one result per check before and after")
        self.before = before
        self.after = after
    }

    /// Checks that passed before and fail now.
    public var regressions: Int { zip(before, after).filter { $0 && !$1 }.count }
    public var passedBefore: Int { before.filter { $0 }.count }
    public var passedAfter: Int { after.filter { $0 }.count }
    public var count: Int { after.count }
}

/// Everything the gate judges a candidate by; filled by the update, judged by `Gate.decide`.
public struct GateInputs: Sendable {
    /// The batch's held-out checks, item by item: `itemProbeCounts[i]` consecutive results belong to item i.
    public var probes = CheckPair()
    public var itemProbeCounts: [Int] = []
    /// For a batch without held-out checks (thumbs-ups): the loss on its examples before and after.
    public var exampleLoss: (before: Double, after: Double)?
    /// The adapter's canaries.
    public var canaries = CheckPair()
    /// A sample of the adapter's earlier corrections, asked again: what it learned before.
    public var history = CheckPair()
    /// Neighbourhood questions of this batch's corrections (same shape, other subjects):
    /// whether the candidate still gives the base model's answer.
    public var neighbourhood: [LocalityResult] = []
    /// The general locality set: whether the candidate still gives the base model's answer.
    public var locality: [LocalityResult] = []
    /// Anchor drift in bits per token.
    public var nllRise = 0.0
    public var kl = 0.0
    /// No NaN or infinity in the weights or the figures.
    public var finite = true

    public init() {}
}

/// A locality or neighbourhood prompt's answer on the candidate, against the base model's.
public enum LocalityResult: Sendable, Equatable {
    /// It still names most of the key words of the base answer's first sentence.
    case kept
    /// It no longer does: another answer, or the same in other words.
    case drifted
    /// It names a word the adapter was taught that the base answer did not: a correction
    /// leaking into questions it does not answer ("a banana is bright teal").
    case contaminated(String)

    public var isKept: Bool { self == .kept }
    public var leak: String? { if case .contaminated(let word) = self { word } else { nil } }
}

/// Why the gate refused a candidate: one case per criterion (DESIGN.md, "Gate").
public enum GateReason: Sendable, Equatable, CustomStringConvertible {
    case notFinite
    /// Held-out checks of this batch that passed on the parent fail on the candidate.
    case heldOutRegressed(count: Int)
    /// Too few items pass all their held-out checks.
    case notLearned(items: Int, of: Int, neededPercent: Int)
    /// The held-out checks pass no more often than before.
    case noImprovement(passed: Int, of: Int, before: Int)
    case lossDidNotFall(before: Double, after: Double)
    case canaryRegressed(count: Int)
    /// Earlier corrections of the adapter that it answered before and no longer does.
    case forgot(count: Int, of: Int)
    /// Locality and neighbourhood answers that now name taught words, beyond the allowance.
    case contaminated(count: Int, of: Int, allowed: Int, words: [String])
    /// Locality and neighbourhood prompts whose base answer the candidate no longer gives, beyond the allowance.
    case localityChanged(count: Int, of: Int, allowed: Int)
    case nllRose(bits: Double, limit: Double)
    case klTooHigh(bits: Double, limit: Double)

    public var description: String {
        switch self {
        case .notFinite: "not finite: NaN or infinity in the weights or metrics"
        case .heldOutRegressed(let n): "\(n) held-out check(s) that passed before now fail"
        case .notLearned(let items, let of, let needed): "not learned: \(items) of \(of) items pass their held-out checks (need \(needed)%)"
        case .noImprovement(let passed, let of, let before): "not learned: held-out checks pass \(passed) of \(of) times, \(before) before"
        case .lossDidNotFall(let before, let after): String(format: "not learned: the loss on the new examples did not fall (%.3f → %.3f)", before, after)
        case .canaryRegressed(let n): "\(n) canary check(s) regressed"
        case .forgot(let n, let of): "forgot: \(n) of \(of) earlier corrections it answered before are no longer answered"
        case .contaminated(let n, let of, let allowed, let words):
            "not local: \(n) of \(of) unrelated answers now name what the adapter was taught (\(words.joined(separator: ", "))); at most \(allowed) may"
        case .localityChanged(let n, let of, let allowed):
            "not local: \(n) of \(of) unrelated prompts no longer get the base model's answer (at most \(allowed) may)"
        case .nllRose(let bits, let limit): String(format: "general drift: anchor NLL rose %.3f bits/token (limit %.3f)", bits, limit)
        case .klTooHigh(let bits, let limit): String(format: "general drift: KL(base‖candidate) %.3f bits/token (limit %.3f)", bits, limit)
        }
    }
}

/// The gate's verdict: accepted, or every criterion the candidate failed.
public struct GateVerdict: Sendable, Equatable {
    public var reasons: [GateReason]
    public var accepted: Bool { reasons.isEmpty }
    /// The reasons as one sentence, as stored with a rejected version.
    public var reason: String? { reasons.isEmpty ? nil : reasons.map(\.description).joined(separator: "; ") }
}

/// The gate's limits and its decision: a pure function of the checks, so every rule is
/// unit-tested without a model.
public struct Gate: Sendable, Equatable {
    /// Share of the batch's items (with held-out checks) that must pass all of them.
    public var minLearnedFraction = 0.75
    /// Most anchor NLL rise and KL(base‖candidate), bits per token.
    public var maxNLLRise = 0.08
    public var maxKL = 0.7
    /// Share of the adapter's earlier corrections that may be forgotten by one update.
    public var maxForgottenFraction = 0.0
    /// Share of locality and neighbourhood answers that may name a taught word. Measured on
    /// SmolLM2 after 8 corrections (22 steps): 1 of 52 ("A banana is a bright teal.").
    public var maxContaminated = 0.05
    /// Share of locality and neighbourhood prompts whose answer may drift from the base's.
    /// Free greedy answers of a 135M model move with any update (the same 8 corrections made
    /// 22 of 52 answers shorter or reworded); a collapsed model changes nearly all.
    public var maxLocalityChanged = 0.5

    public init() {}

    public func decide(_ input: GateInputs) -> GateVerdict {
        var reasons: [GateReason] = []
        if !input.finite { reasons.append(.notFinite) }
        let itemsWithProbes = input.itemProbeCounts.filter { $0 > 0 }.count
        if itemsWithProbes > 0 {
            if input.probes.regressions > 0 { reasons.append(.heldOutRegressed(count: input.probes.regressions)) }
            let learned = learnedItems(input)
            if Double(learned) < minLearnedFraction * Double(itemsWithProbes) {
                reasons.append(.notLearned(items: learned, of: itemsWithProbes, neededPercent: Int((minLearnedFraction * 100).rounded())))
            } else if input.probes.passedAfter <= input.probes.passedBefore && input.probes.passedBefore < input.probes.count {
                reasons.append(.noImprovement(passed: input.probes.passedAfter, of: input.probes.count, before: input.probes.passedBefore))
            }
        } else if let loss = input.exampleLoss, !(loss.after < loss.before) {
            reasons.append(.lossDidNotFall(before: loss.before, after: loss.after))
        }
        if input.canaries.regressions > 0 { reasons.append(.canaryRegressed(count: input.canaries.regressions)) }
        let known = input.history.passedBefore
        if input.history.regressions > Int(maxForgottenFraction * Double(known)) {
            reasons.append(.forgot(count: input.history.regressions, of: known))
        }
        let local = input.neighbourhood + input.locality
        let leaks = local.compactMap(\.leak), leaksAllowed = Int(maxContaminated * Double(local.count))
        if leaks.count > leaksAllowed {
            reasons.append(.contaminated(count: leaks.count, of: local.count, allowed: leaksAllowed, words: Array(Set(leaks)).sorted()))
        }
        let changed = local.filter { !$0.isKept }.count, allowed = Int(maxLocalityChanged * Double(local.count))
        if changed > allowed { reasons.append(.localityChanged(count: changed, of: local.count, allowed: allowed)) }
        if input.nllRise > maxNLLRise { reasons.append(.nllRose(bits: input.nllRise, limit: maxNLLRise)) }
        if input.kl > maxKL { reasons.append(.klTooHigh(bits: input.kl, limit: maxKL)) }
        return GateVerdict(reasons: reasons)
    }

    /// Items whose held-out checks all pass on the candidate.
    public func learnedItems(_ input: GateInputs) -> Int {
        var offset = 0, learned = 0
        for count in input.itemProbeCounts {
            defer { offset += count }
            if count > 0 && input.probes.after[offset..<(offset + count)].allSatisfy({ $0 }) { learned += 1 }
        }
        return learned
    }

    /// The figures the version keeps (`hone.model_versions.metrics`).
    public func metrics(_ input: GateInputs) -> [String: JSONValue] {
        [
            "probes": .int(input.probes.count), "probes_passed_before": .int(input.probes.passedBefore),
            "probes_passed_after": .int(input.probes.passedAfter), "probes_newly_failed": .int(input.probes.regressions),
            "items_learned": .int(learnedItems(input)), "items_with_probes": .int(input.itemProbeCounts.filter { $0 > 0 }.count),
            "canaries": .int(input.canaries.count), "canary_regressions": .int(input.canaries.regressions),
            "history_probes": .int(input.history.count), "history_known_before": .int(input.history.passedBefore),
            "history_forgotten": .int(input.history.regressions),
            "neighbourhood": .int(input.neighbourhood.count), "neighbourhood_kept": .int(input.neighbourhood.filter(\.isKept).count),
            "locality": .int(input.locality.count), "locality_kept": .int(input.locality.filter(\.isKept).count),
            "locality_contaminated": .int((input.neighbourhood + input.locality).filter { $0.leak != nil }.count),
            "anchor_nll_rise_bits": .double(input.nllRise), "kl_bits": .double(input.kl),
        ]
    }
}
