import Foundation
import Logging
import Postgres
import Queue
import Server
import ServiceLifecycle

/// Keeps the server's API keys in step with `hone.api_keys`: reloads on a `hone_keys`
/// notification (a key created or revoked on any replica) and every poll interval, in case
/// one was missed. When the database cannot be read it keeps the keys it has: an outage
/// neither opens the API nor locks clients out.
struct APIKeyWatcher: Service {
    let pool: PostgresPool
    let keys: APIKeys
    let wake: WakeSignal
    let pollInterval: Duration
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await reload()
                await wake.wait(timeout: pollInterval)
            }
        }
    }

    func reload() async {
        do {
            keys.replace(try await Self.load(pool))
        } catch {
            logger.warning("cannot read hone.api_keys; keeping the keys loaded before", metadata: ["error": "\(error)"])
        }
    }

    /// The keys not revoked.
    static func load(_ pool: PostgresPool) async throws -> [APIKeys.Key] {
        try await pool.query("SELECT key_sha256, adapters, operator FROM hone.api_keys WHERE revoked_at IS NULL ORDER BY id").map { row in
            APIKeys.Key(digest: try row.decode("key_sha256"), adapters: Set(try row.decode("adapters", as: [String].self)),
                               isOperator: try row.decode("operator"))
        }
    }
}
