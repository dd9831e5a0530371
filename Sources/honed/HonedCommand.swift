import ArgumentParser
import Foundation
import HoneDaemon
import Logging

/// `honed` — the Hone daemon.
@main
struct HonedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "honed",
        abstract: "Hone's daemon: prepares the database and runs the queue's services.",
        discussion: """
            Without a database URL it runs the embedded default: a private PostgreSQL cluster \
            under the data directory (HONE_DATA_DIR, default <checkout>/.hone).
            """)

    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (or HONE_DATABASE_URL); unset: the embedded default.")
    var databaseURL: String?

    @Option(name: .customLong("data-dir"), help: "Data directory (or HONE_DATA_DIR).")
    var dataDirectory: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "honed")
        var paths = HonePaths.fromEnvironment()
        if let dataDirectory { paths.dataDirectory = URL(fileURLWithPath: dataDirectory) }
        let url = databaseURL ?? ProcessInfo.processInfo.environment["HONE_DATABASE_URL"]
        try await Daemon.run(DaemonConfiguration(databaseURL: url, paths: paths), logger: logger)
    }
}
