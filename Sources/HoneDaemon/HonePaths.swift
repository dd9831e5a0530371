import Foundation

/// Where Hone's files are: the checkout's `migrations/` and `jobs/`, and the data
/// directory for the private PostgreSQL and caches.
public struct HonePaths: Sendable {
    /// The project root that holds `migrations/` and `jobs/`.
    public var root: URL
    /// State that outlives a run: the private cluster, caches.
    public var dataDirectory: URL

    public var migrations: URL { root.appendingPathComponent("migrations") }
    public var jobs: URL { root.appendingPathComponent("jobs") }
    /// The embedded default's PostgreSQL cluster.
    public var postgresDirectory: URL { dataDirectory.appendingPathComponent("pg") }

    public init(root: URL, dataDirectory: URL) {
        self.root = root
        self.dataDirectory = dataDirectory
    }

    /// `$HONE_HOME` (else the checkout this binary was built from) and `$HONE_DATA_DIR`
    /// (else `<root>/.hone`).
    public static func fromEnvironment() -> HonePaths {
        let env = ProcessInfo.processInfo.environment
        let root = env["HONE_HOME"].map { URL(fileURLWithPath: $0) } ?? sourceCheckout
        let data = env["HONE_DATA_DIR"].map { URL(fileURLWithPath: $0) } ?? root.appendingPathComponent(".hone")
        return HonePaths(root: root, dataDirectory: data)
    }

    /// The checkout this file was compiled from: Sources/HoneDaemon/HonePaths.swift → root.
    static var sourceCheckout: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
}
