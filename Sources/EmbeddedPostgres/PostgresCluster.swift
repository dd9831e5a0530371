import Foundation
import Logging

/// A private PostgreSQL cluster in a directory of its own: `initdb`, start on a unix
/// socket inside that directory (and optionally a loopback port), stop.
///
/// PostgreSQL refuses to run as root, so when this process is root the server runs as
/// an unprivileged system user (`postgres`, which Debian's package creates) that owns
/// the data directory.
public struct PostgresCluster: Sendable {
    /// Options fixed when the cluster is created.
    public struct Options: Sendable {
        /// TCP port on 127.0.0.1, or nil for the unix socket only.
        public var port: Int?
        /// False for throwaway clusters (tests): no fsync, no synchronous commit.
        public var durable: Bool
        /// The superuser `initdb` creates; clients connect as this user over the socket.
        public var superuser: String
        /// Extra `postgresql.conf` settings.
        public var settings: [String: String]

        public init(port: Int? = nil, durable: Bool = true, superuser: String = "postgres", settings: [String: String] = [:]) {
            self.port = port
            self.durable = durable
            self.superuser = superuser
            self.settings = settings
        }
    }

    /// The data directory; the server's socket lives here too.
    public let directory: URL
    public let options: Options
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    public let binDirectory: URL
    /// The OS user the server runs as when this process is root; nil when not root.
    public let serverUser: String?

    public init(directory: URL, options: Options = Options()) throws {
        self.directory = directory.standardizedFileURL
        self.options = options
        self.binDirectory = try Self.locateBinaries()
        self.serverUser = getuid() == 0 ? "postgres" : nil
        // A unix socket path is limited to 107 bytes.
        let socketPath = self.directory.path + "/.s.PGSQL.\(options.port ?? 5432)"
        guard socketPath.utf8.count < 107 else {
            throw ClusterError("the data directory path is too long for a unix socket (\(socketPath.utf8.count) bytes, limit 107): choose a shorter one")
        }
    }

    /// A libpq URL for `database` on this cluster's socket.
    public func url(database: String = "postgres") -> String {
        var url = "postgresql://\(options.superuser)@/\(database)?host=\(directory.path)"
        if let port = options.port { url += "&port=\(port)" }
        return url
    }

    /// Finds the server binaries: `$HONE_PG_BINDIR`, else the newest
    /// `/usr/lib/postgresql/N/bin` (Debian), else `pg_config --bindir`.
    public static func locateBinaries() throws -> URL {
        let fm = FileManager.default
        if let dir = ProcessInfo.processInfo.environment["HONE_PG_BINDIR"] {
            return URL(fileURLWithPath: dir)
        }
        let root = "/usr/lib/postgresql"
        let versions = ((try? fm.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        for version in versions.reversed() where fm.isExecutableFile(atPath: "\(root)/\(version)/bin/initdb") {
            return URL(fileURLWithPath: "\(root)/\(version)/bin")
        }
        if let out = try? run(["pg_config", "--bindir"]), fm.isExecutableFile(atPath: out + "/initdb") {
            return URL(fileURLWithPath: out)
        }
        throw ClusterError("PostgreSQL server binaries not found: install the postgresql package (ops/setup does) or set HONE_PG_BINDIR")
    }

    /// True when the directory holds an initialized cluster.
    public var isInitialized: Bool {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent("PG_VERSION").path)
    }

    /// Creates the cluster when the directory does not hold one yet; idempotent.
    public func initialize(logger: Logger) throws {
        let fm = FileManager.default
        if isInitialized { return }
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        if let serverUser {
            try Self.run(["chown", serverUser, directory.path])
            try Self.run(["chmod", "700", directory.path])
            do {
                try Self.run(["runuser", "-u", serverUser, "--", "test", "-w", directory.path])
            } catch {
                throw ClusterError("the \(serverUser) user cannot write \(directory.path): every parent directory must be searchable by it (chmod o+x) — or choose a data directory elsewhere")
            }
        }
        logger.info("initializing private PostgreSQL cluster", metadata: ["postgres.data_dir": "\(directory.path)"])
        try runAsServer([binDirectory.appendingPathComponent("initdb").path,
                         "-D", directory.path, "-U", options.superuser, "-A", "trust",
                         "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]
                        + (options.durable ? [] : ["--no-sync"]))
        var settings: [String: String] = [
            "listen_addresses": options.port == nil ? "''" : "'127.0.0.1'",
            "unix_socket_directories": "'\(directory.path)'",
            "port": String(options.port ?? 5432),
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",
        ]
        if !options.durable {
            settings["fsync"] = "off"
            settings["synchronous_commit"] = "off"
            settings["full_page_writes"] = "off"
        }
        settings.merge(options.settings) { $1 }
        let conf = settings.keys.sorted().map { "\($0) = \(settings[$0]!)" }.joined(separator: "\n")
        // Written to its own file so the generated postgresql.conf stays untouched.
        let honeConf = directory.appendingPathComponent("hone.conf")
        try (conf + "\n").write(to: honeConf, atomically: true, encoding: .utf8)
        let mainConf = directory.appendingPathComponent("postgresql.conf")
        let handle = try FileHandle(forWritingTo: mainConf)
        handle.seekToEndOfFile()
        handle.write(Data("\ninclude 'hone.conf'\n".utf8))
        try handle.close()
        if let serverUser { try Self.run(["chown", serverUser, honeConf.path]) }
    }

    /// Starts the server and waits until it accepts connections.
    public func start(logger: Logger) throws {
        if isRunning { return }
        logger.info("starting private PostgreSQL", metadata: ["postgres.data_dir": "\(directory.path)"])
        try runAsServer([binDirectory.appendingPathComponent("pg_ctl").path, "-D", directory.path,
                         "-l", directory.appendingPathComponent("server.log").path, "-w", "-t", "60", "start"])
    }

    /// How `stop` shuts the server down (`pg_ctl stop -m`).
    public enum ShutdownMode: String, Sendable {
        /// Sessions are ended and the cluster is left consistent (a checkpoint is written).
        case fast
        /// The server quits at once, as in a crash: the next start replays the WAL.
        case immediate
    }

    /// Stops the server (fast shutdown by default).
    public func stop(logger: Logger, mode: ShutdownMode = .fast) throws {
        guard isRunning else { return }
        logger.info("stopping private PostgreSQL", metadata: ["postgres.data_dir": "\(directory.path)", "postgres.shutdown": "\(mode.rawValue)"])
        try runAsServer([binDirectory.appendingPathComponent("pg_ctl").path, "-D", directory.path,
                         "-m", mode.rawValue, "-w", "-t", "60", "stop"])
    }

    /// True when a server is running on this data directory.
    public var isRunning: Bool {
        (try? runAsServer([binDirectory.appendingPathComponent("pg_ctl").path, "-D", directory.path, "status"])) != nil
    }

    private func runAsServer(_ arguments: [String]) throws {
        if let serverUser {
            try Self.run(["runuser", "-u", serverUser, "--"] + arguments)
        } else {
            try Self.run(arguments)
        }
    }

    /// Runs a program found on PATH (or by absolute path) and returns its trimmed output;
    /// throws with its output when it exits non-zero.
    ///
    /// posix_spawn + waitpid rather than Foundation's Process, whose waitUntilExit can hang
    /// on Linux when several run at once. Output goes to an unlinked close-on-exec temp
    /// file, not a pipe: `pg_ctl start` leaves a postmaster running that must not hold
    /// our end open.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        var template = Array("/tmp/hone-run-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw ClusterError("cannot create a temporary file: errno \(errno)") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(fd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fd, 1)
        posix_spawn_file_actions_adddup2(&actions, fd, 2)
        // Started in / (env -C): the server user may not be able to read our working directory.
        let command = ["env", "-C", "/"] + arguments
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let spawned = posix_spawnp(&pid, command[0], &actions, nil, &argv, environ)
        guard spawned == 0 else {
            throw ClusterError("cannot run \(arguments[0]): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw ClusterError("waitpid failed for \(arguments[0]): errno \(errno)") }
        }
        lseek(fd, 0, SEEK_SET)
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            data.append(contentsOf: buffer[0..<n])
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // WIFEXITED/WEXITSTATUS are macros Swift cannot import.
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let how = exited ? "exit \(code)" : "signal \(status & 0x7f)"
            throw ClusterError("\(arguments.prefix(2).joined(separator: " ")) failed (\(how)): \(text)")
        }
        return text
    }
}

/// A cluster operation that failed, with the tool's own output.
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
