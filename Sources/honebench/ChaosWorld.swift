import EmbeddedPostgres
import Foundation
import Logging
import Postgres
import Synchronization
import BuiltTools

/// What `honebench chaos` runs and breaks: a private PostgreSQL whose data directory sits on
/// a small tmpfs of its own (so the disk can be filled), one serving replica the clients
/// use, and two learner replicas, all `honed` processes of this build's configuration.
final class ChaosWorld: @unchecked Sendable {
    /// One `honed` process; restarted in place after a kill.
    final class Replica: @unchecked Sendable {
        let name: String
        let port: Int
        let learner: Bool
        let directory: String
        private let arguments: [String]
        private let environment: [String: String]
        private let state = Mutex<(pid: pid_t, running: Bool, starts: Int)>((0, false, 0))

        init(name: String, port: Int, learner: Bool, directory: String, databaseURL: String, environment: [String: String]) {
            self.name = name
            self.port = port
            self.learner = learner
            self.directory = directory
            self.environment = environment
            // One thread each: three replicas share two cores, and a learner's fork-join loops
            // on two threads would wait on whichever one is descheduled.
            var args = ["--port", "\(port)", "--data-dir", directory, "--database-url", databaseURL, "--log-level", "info",
                        "--threads", "1"]
            if let model = ProcessInfo.processInfo.environment["HONE_MODEL"] { args += ["--model", model] }
            // Learning at serving's priority (share 0.5): the faults are the subject here, and
            // at the default share the learners' updates wait behind the clients for minutes.
            args += learner ? ["--learner-lease", "\(ChaosWorld.leaseSeconds)", "--learning-share", "0.5"] : ["--no-learner"]
            arguments = args
        }

        var pid: pid_t { state.withLock { $0.pid } }

        func start() throws {
            // The last run's log is kept beside (a crash's reason must survive the restart).
            let starts = state.withLock { $0.starts += 1; return $0.starts }
            if starts > 1 {
                for suffix in [".log", ".err"] { rename(directory + suffix, directory + "\(suffix).\(starts - 1)") }
            }
            guard let honed = BuiltTool("honed", configuration: ChaosWorld.configuration) else {
                throw BenchError(message: "build honed (\(ChaosWorld.configuration)) first")
            }
            let pid = try honed.spawn(arguments, stdout: directory + ".log", stderr: directory + ".err", environment: environment)
            state.withLock { $0.pid = pid; $0.running = true }
        }

        /// Waits for /readyz; throws with the tail of its log when it exits or never gets ready.
        func ready(timeout: Duration = .seconds(300)) async throws {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if (try? ServeBench.get(port: port, path: "/readyz", timeoutSeconds: 5))?.status == 200 { return }
                if exited() != nil { throw BenchError(message: "\(name) exited while starting: \(logTail())") }
                try await Task.sleep(for: .milliseconds(200))
            }
            throw BenchError(message: "\(name) did not become ready: \(logTail())")
        }

        /// Sends `signal`; SIGKILL also reaps the process.
        func send(_ signal: Int32) {
            let pid = self.pid
            kill(pid, signal)
            if signal == SIGKILL {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                state.withLock { $0.running = false }
            }
        }

        /// The wait status when the process ended by itself since the last look, else nil.
        func exited() -> Int32? {
            state.withLock { s -> Int32? in
                guard s.running else { return nil }
                var status: Int32 = 0
                guard waitpid(s.pid, &status, WNOHANG) == s.pid else { return nil }
                s.running = false
                return status
            }
        }

        /// SIGTERM and wait.
        func stop() {
            let (pid, running) = state.withLock { ($0.pid, $0.running) }
            guard running else { return }
            kill(pid, SIGCONT)
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            state.withLock { $0.running = false }
        }

        /// What the running (or last) process wrote to stderr.
        func log() -> String { (try? String(contentsOfFile: directory + ".err", encoding: .utf8)) ?? "" }

        func logTail() -> String { String(log().suffix(600)) }

        /// The learner's phase from /metrics (`hone_learner_phase{phase="…"} 1`), nil when unreachable.
        func phase() -> String? {
            guard let (status, body) = try? ServeBench.get(port: port, path: "/metrics", timeoutSeconds: 2), status == 200 else { return nil }
            for line in body.split(separator: "\n") where line.hasPrefix("hone_learner_phase{") && line.hasSuffix(" 1") {
                if let start = line.range(of: "phase=\""), let end = line[start.upperBound...].firstIndex(of: "\"") {
                    return String(line[start.upperBound..<end])
                }
            }
            return nil
        }

        /// A counter or gauge from /metrics (the first sample of the family), nil when unreachable.
        func metric(_ name: String) -> Double? {
            ServeBench.metrics(port: port, [name])?[name]
        }

        /// The version a one-token greedy answer on `model` comes from ("chaos@v3"), nil on failure.
        func fingerprint(_ model: String) -> String? {
            (try? ServeBench.chat(port: port, model: model, prompt: "Hi", maxTokens: 1))?.version
        }
    }

    /// Seconds a learner's update holds its jobs between heartbeats (`--learner-lease`).
    static let leaseSeconds = 4
    /// The payload text that makes a learner trap (`HONE_FAILPOINT_CRASH`).
    static let crashMarker = "CHAOS-CRASH-PAYLOAD"
    #if DEBUG
    static let configuration = "debug"
    #else
    static let configuration = "release"
    #endif

    let root: String
    /// The tmpfs mount the cluster lives on; nil when this machine cannot mount one.
    let disk: String?
    let cluster: PostgresCluster
    let url: String
    let server: Replica
    let learners: [Replica]
    let logger: Logger
    var replicas: [Replica] { [server] + learners }

    init(logger: Logger) async throws {
        self.logger = logger
        let base = ProcessInfo.processInfo.environment["HONE_TEST_TMP"] ?? NSTemporaryDirectory()
        root = base + "/chaos-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root + "/disk", withIntermediateDirectories: true)
        chmod(root, 0o755)
        let mount = BuiltTool(system: ["/usr/bin/mount", "/bin/mount"])
        let mounted = try mount?.run(["-t", "tmpfs", "-o", "size=768m,mode=0755", "tmpfs", root + "/disk"])
        disk = mounted?.status == 0 ? root + "/disk" : nil
        if disk == nil { logger.warning("cannot mount a tmpfs: the disk-full fault is skipped", metadata: ["error": "\(mounted?.err ?? "no mount")"]) }
        cluster = try PostgresCluster(directory: URL(fileURLWithPath: root + "/disk/pg"),
                                      options: .init(settings: ["max_wal_size": "'96MB'", "min_wal_size": "'32MB'"]))
        try cluster.initialize(logger: logger)
        try cluster.start(logger: logger)
        let admin = try await PostgresPool.connect(cluster.url(), timeout: .seconds(30), logger: logger)
        try await admin.execute("CREATE DATABASE hone")
        admin.close()
        url = cluster.url(database: "hone")
        let port = 31000 + Int(getpid() % 8000)
        let environment = ["HONE_FAILPOINT_CRASH": Self.crashMarker]
        let (root, url) = (root, url)
        server = Replica(name: "server", port: port, learner: false, directory: root + "/server", databaseURL: url, environment: [:])
        learners = (1...2).map {
            Replica(name: "learner\($0)", port: port + $0, learner: true, directory: root + "/learner\($0)", databaseURL: url, environment: environment)
        }
        // The first replica migrates the database; the first learner starts after it, the
        // second once the first stored the base references (`startSecondLearner`).
        try server.start()
        try await server.ready()
        try learners[0].start()
        try await learners[0].ready()
    }

    /// Starts the second learner (after the first made the references, which it then reads).
    func startSecondLearner() async throws {
        try learners[1].start()
        try await learners[1].ready()
    }

    /// Stops every replica and the cluster, unmounts the disk, removes the directory.
    func tearDown() {
        for replica in replicas { replica.stop() }
        try? cluster.stop(logger: logger)
        if let disk { _ = try? BuiltTool(system: ["/usr/bin/umount", "/bin/umount"])?.run([disk]) }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Fills the tmpfs to the last byte with a file; returns the bytes written.
    func fillDisk() -> Int {
        guard let disk else { return 0 }
        let fd = open(disk + "/filler", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var written = 0
        for chunk in [1 << 20, 1 << 12, 1] {
            let buffer = [UInt8](repeating: 0xAB, count: chunk)
            while write(fd, buffer, chunk) == chunk { written += chunk }
        }
        return written
    }

    func freeDisk() {
        guard let disk else { return }
        unlink(disk + "/filler")
    }
}
