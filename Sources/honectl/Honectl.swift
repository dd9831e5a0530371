import ArgumentParser
import Foundation
import Tensor

/// `honectl` — Hone's operator CLI. Exit codes: 0 success, 1 the operation failed
/// (database error, refused change), 2 bad usage.
@main
struct Honectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "honectl",
        abstract: "Operate Hone: migrate the database, inspect and manage the queue, train and try adapters.",
        discussion: """
            Database commands take --database-url or $HONE_DATABASE_URL; the hone_operator role suffices. \
            Tables by default, --json for scripts.

            Exit codes: 0 success; 1 the operation failed or was refused (database error, missing adapter, \
            version or job, a rollback to a rejected or other-base version); 2 bad usage (unknown command \
            or option, invalid value, no database given).
            """,
        subcommands: [Status.self, Adapters.self, Versions.self, Rollback.self, Pin.self, Unpin.self, Pause.self, Resume.self,
                      Jobs.self, Feedback.self, Review.self, Keys.self, Export.self, Migrate.self, CPU.self, Generate.self, Tokenize.self, Train.self])

    /// Exit codes scripts can trust: 0 done, 1 the operation failed (database error,
    /// refused change, missing object), 2 bad usage (ArgumentParser's 64 is mapped to 2).
    static func main() async {
        CPUEnvironment.prepareProcess()
        do {
            var command = try parseAsRoot(nil)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code.rawValue == 64 {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
