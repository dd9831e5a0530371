import Foundation
import Llama
import Tensor
import Synchronization

/// What a request's stream delivers.
public enum GenerationEvent: Sendable {
    /// A token and the text that became final with it.
    case step(GenerationStep)
    /// The whole result; the stream ends after it.
    case finished(GenerationResult)
}

/// Continuous batching: requests join and leave between steps, and every step decodes all
/// active sequences of a model in one forward pass. Runs on a dedicated thread (the
/// forward pass is long blocking CPU work that must not occupy Swift's cooperative pool).
///
/// Every row of a pass gets its own result whatever else shares the pass: decode rows (and,
/// where the row kernels batch, new prompts' last chunks) use per-row kernels, and prompt
/// chunks that take a GEMM are prefilled on their own. So what a request produces never
/// depends on which other requests share its batch.
public final class BatchScheduler: @unchecked Sendable {
    // Safe to share: `pending` and `stopped` are guarded by `condition`; entries in the
    // active set are touched only by the scheduler thread, or while it waits in
    // `advanceAll`, each by one pool thread (their `cancelled` is atomic).
    final class Entry: @unchecked Sendable {
        let snapshot: ModelSnapshot
        let adapter: LoRAAdapter?
        var state: DecodingState
        var cache: KVCache?
        var logits: [Float] = []
        var lastToken = 0
        let continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation
        let cancelled = Atomic<Bool>(false)

        init(snapshot: ModelSnapshot, adapter: LoRAAdapter?, state: DecodingState,
             continuation: AsyncThrowingStream<GenerationEvent, Error>.Continuation) {
            self.snapshot = snapshot
            self.adapter = adapter
            self.state = state
            self.continuation = continuation
        }
    }

    /// Most sequences decoded together; more wait for a place.
    public let maxBatch: Int
    private let condition = NSCondition()
    private var pending: [Entry] = []
    private var stopped = false
    private let activeCount = Atomic<Int>(0)
    /// Where the forward passes run.
    public let compute: ComputeScheduler
    /// The class of its work: `.serving` for clients; `.learning` for the learner's own
    /// generations, which then batch with each other and wait behind every client (a
    /// learner prompt's prefill in the clients' scheduler stalled their streams ~0.3 s).
    public let work: WorkClass
    /// The base model's prompt prefixes this scheduler reuses.
    public let prefixes: PrefixCache

    public init(maxBatch: Int = 16, compute: ComputeScheduler, work: WorkClass = .serving, prefixes: PrefixCache = PrefixCache()) {
        precondition(maxBatch > 0)
        self.maxBatch = maxBatch
        self.compute = compute
        self.work = work
        self.prefixes = prefixes
    }

    /// Sequences being decoded or waiting now (for metrics and admission control).
    public var load: Int {
        condition.lock()
        defer { condition.unlock() }
        return pending.count + activeCount.load(ordering: .relaxed)
    }

    /// Queues a request on `snapshot`'s base with `adapter` (nil: the base model); its
    /// events arrive on the returned stream. Dropping the stream (e.g. a client that
    /// disconnected) stops the sequence at the next step.
    /// - Throws: ModelError when the prompt is empty or does not fit the context.
    public func submit(_ request: GenerationRequest, on snapshot: ModelSnapshot,
                       adapter: LoRAAdapter? = nil) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        let state = try DecodingState(request: request, tokenizer: snapshot.tokenizer,
                                      contextLength: snapshot.model.config.contextLength)
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        let entry = Entry(snapshot: snapshot, adapter: adapter, state: state, continuation: continuation)
        continuation.onTermination = { _ in entry.cancelled.store(true, ordering: .relaxed) }
        condition.lock()
        if stopped {
            condition.unlock()
            continuation.finish(throwing: CancellationError())
            return stream
        }
        pending.append(entry)
        condition.signal()
        condition.unlock()
        return stream
    }

    /// Runs the scheduler until the calling task is cancelled; unfinished requests then
    /// end with CancellationError.
    public func run() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    compute.bind(work) { loop() }
                    done.resume()
                }
                thread.name = "hone.scheduler.\(work)"
                thread.start()
            }
        } onCancel: {
            condition.lock()
            stopped = true
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Takes the token `entry.logits` gives and sends it; false when the sequence is over
    /// (finished, or its client went away).
    private func advance(_ entry: Entry) -> Bool {
        if entry.cancelled.load(ordering: .relaxed) {
            entry.continuation.finish()
            return false
        }
        switch entry.state.accept(logits: entry.logits) {
        case .next(let step):
            entry.continuation.yield(.step(step))
            entry.lastToken = step.choice.token
            return true
        case .finished(let step):
            if let step { entry.continuation.yield(.step(step)) }
            entry.continuation.yield(.finished(entry.state.result))
            entry.continuation.finish()
            return false
        }
    }

    /// `advance` for every running sequence, spread over the pool's threads: each samples
    /// from its own logits (at 16 sequences a serial pass held one core for ~1.5-3.5 ms a
    /// step while the other idled). Returns the sequences that go on, in their order.
    private func advanceAll(_ entries: [Entry]) -> [Entry] {
        var goesOn = [Bool](repeating: false, count: entries.count)
        goesOn.withUnsafeMutableBufferPointer { flags in
            let flags = flags.baseAddress!
            Parallel.for(entries.count) { flags[$0] = advance(entries[$0]) }
        }
        return zip(entries, goesOn).filter(\.1).map(\.0)
    }

    private func loop() {
        var active: [Entry] = []
        while true {
            condition.lock()
            while pending.isEmpty && active.isEmpty && !stopped { condition.wait() }
            if stopped {
                let waiting = pending
                pending.removeAll()
                condition.unlock()
                for e in waiting + active { e.continuation.finish(throwing: CancellationError()) }
                activeCount.store(0, ordering: .relaxed)
                return
            }
            let room = max(0, maxBatch - active.count)
            let admitted = Array(pending.prefix(room))
            pending.removeFirst(admitted.count)
            condition.unlock()

            // Running sequences first take their token. A new prompt's last chunk joins this
            // step's pass when the row kernels batch (every row's result is its own then, and
            // the weights are read once for all: chunked prefill mixed into decode); its
            // first token goes out at the next step. Otherwise each new prompt is prefilled
            // on its own and its first token sent at once.
            let joinPass = KernelLevel.active.batchesRows
            var decoding = advanceAll(active)
            var joining: [(entry: Entry, tokens: [Int])] = []
            for entry in admitted where !entry.cancelled.load(ordering: .relaxed) {
                do {
                    let cache = entry.snapshot.model.makeCache(capacity: entry.state.cacheCapacity)
                    entry.cache = cache
                    let request = entry.state.request
                    if joinPass {
                        let last = try entry.snapshot.model.prefillAllButLast(
                            request.promptTokens, turnStarts: request.turnStarts, cache: cache, adapter: entry.adapter, reuse: prefixes)
                        joining.append((entry, last))
                    } else {
                        entry.logits = try entry.snapshot.model.prefill(request.promptTokens, turnStarts: request.turnStarts, cache: cache,
                                                                        adapter: entry.adapter, reuse: prefixes)
                        if advance(entry) { decoding.append(entry) }
                    }
                } catch {
                    entry.continuation.finish(throwing: error)
                }
            }

            // One forward pass per model for all of its sequences.
            let rows = decoding.map { ($0, [$0.lastToken]) } + joining
            var byModel: [ObjectIdentifier: [(entry: Entry, tokens: [Int])]] = [:]
            for row in rows { byModel[ObjectIdentifier(row.0.snapshot.model), default: []].append(row) }
            active = rows.map(\.0)
            activeCount.store(active.count, ordering: .relaxed)
            for group in byModel.values {
                do {
                    let logits = try group[0].entry.snapshot.model.forward(
                        group.map { SequenceInput(tokens: $0.tokens, cache: $0.entry.cache!, adapter: $0.entry.adapter) })
                    for (row, l) in zip(group, logits) { row.entry.logits = l[0] }
                } catch {
                    for row in group { row.entry.continuation.finish(throwing: error) }
                    active.removeAll { e in group.contains { $0.entry === e } }
                    activeCount.store(active.count, ordering: .relaxed)
                }
            }
        }
    }
}
