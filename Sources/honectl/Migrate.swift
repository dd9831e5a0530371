import ArgumentParser
import Foundation
import HoneDaemon
import Logging

/// `honectl migrate` — applies pending migrations and the job catalogue.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations and write the job catalogue's defaults.")

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let logger = Logger(label: "honectl")
        let applied: [String]
        do {
            applied = try await HoneDatabase.prepare(conninfo: try database.resolvedURL(),
                                                     paths: HonePaths.fromEnvironment(), logger: logger).map(\.fileName)
        } catch {
            FileHandle.standardError.write(Data("honectl migrate: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if applied.isEmpty {
            print("database is up to date")
        } else {
            for name in applied { print("applied \(name)") }
        }
    }
}

/// `--database-url`, falling back to `HONE_DATABASE_URL`.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (default: $HONE_DATABASE_URL).")
    var databaseURL: String?

    func resolvedURL() throws -> String {
        if let databaseURL { return databaseURL }
        if let env = ProcessInfo.processInfo.environment["HONE_DATABASE_URL"], !env.isEmpty { return env }
        throw ValidationError("no database: pass --database-url or set HONE_DATABASE_URL")
    }
}
