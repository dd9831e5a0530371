import Logging
import Postgres
import Queue
import ServiceLifecycle

/// The daemon's one LISTEN connection: `hone_jobs` wakes the learner, `hone_versions` the
/// version watcher, `hone_keys` the API key watcher. A reconnect wakes all, since
/// notifications sent meanwhile are lost; all also poll, so a broken LISTEN only slows them down.
struct NotificationService: Service {
    let conninfo: String
    let jobs: WakeSignal
    let versions: WakeSignal
    let keys: WakeSignal
    let logger: Logger

    func run() async throws {
        let listener = PostgresListener(conninfo: conninfo, channels: ["hone_jobs", "hone_versions", "hone_keys"], logger: logger)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await listener.run() }
                for await event in listener.events {
                    switch event {
                    case .notification(channel: "hone_jobs", _): jobs.fire()
                    case .notification(channel: "hone_versions", _): versions.fire()
                    case .notification(channel: "hone_keys", _): keys.fire()
                    case .notification: break
                    case .connected:
                        jobs.fire()
                        versions.fire()
                        keys.fire()
                    }
                }
                group.cancelAll()
            }
        }
    }
}
