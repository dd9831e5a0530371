import Foundation
import Synchronization
import Postgres

/// Wakes a waiting worker early: a NOTIFY or a reconnect fires it, and `wait(timeout:)`
/// returns at the first fire or when the poll interval is over, whichever comes first.
/// A fire with nobody waiting is remembered once, so no wake-up is lost between a
/// worker's empty claim and its wait.
public final class WakeSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var nextID: UInt64 = 0
        var timeouts = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// How many waits ended because their timeout ran out rather than by a fire: a worker
    /// woken by NOTIFY never adds to it, one that relies on polling does.
    public var timeouts: Int { state.withLock { $0.timeouts } }

    /// Wakes the waiter, or the next one to wait.
    public func fire() {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { s in
            if let w = s.waiter {
                s.waiter = nil
                return w.continuation
            }
            s.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns after a `fire()` (also one that came before this call) or after `timeout`,
    /// or at once when the task is cancelled. One waiter at a time.
    public func wait(timeout: Duration) async {
        let id: UInt64 = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.pending || Task.isCancelled {
                        s.pending = false
                        return true
                    }
                    precondition(s.waiter == nil, "WakeSignal has one waiter at a time")
                    s.waiter = (id, continuation)
                    return false
                }
                if resumeNow {
                    continuation.resume()
                    return
                }
                let nanoseconds = Int(max(0, timeout / .nanoseconds(1)))
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) {
                    self.resume(id: id, timedOut: true)
                }
            }
        } onCancel: {
            resume(id: id, timedOut: false)
        }
    }

    private func resume(id: UInt64, timedOut: Bool) {
        let waiter: CheckedContinuation<Void, Never>? = state.withLock { s in
            guard let w = s.waiter, w.id == id else { return nil }
            s.waiter = nil
            if timedOut { s.timeouts += 1 }
            return w.continuation
        }
        waiter?.resume()
    }

    /// Fires for every event on `listener` that concerns `channel` (and on reconnects,
    /// when notifications may have been missed) until the listener ends.
    public func follow(_ listener: PostgresListener, channel: String) async {
        for await event in listener.events {
            switch event {
            case .connected: fire()
            case .notification(let c, _) where c == channel: fire()
            case .notification: break
            }
        }
    }
}
