import Foundation

/// An executable built beside the tests (`honectl`, `honed`), run as a user runs it; also
/// used by `honebench` to run the release `honed`, and by tests to run a system program
/// (`promtool`, a headless Chromium) the same way.
public struct BuiltTool: Sendable {
    public let path: String

    /// The tool in `.build/debug` (or another configuration's folder), or nil when it was not built.
    public init?(_ name: String, configuration: String = "debug") {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent(".build/\(configuration)/\(name)").path
        guard FileManager.default.isExecutableFile(atPath: path) else { return nil }
        self.path = path
    }

    /// Where the tests and benchmarks keep what outlives a run (`HONE_CACHE`, else ~/.cache/hone),
    /// as `ops/fetch-model` does.
    public static var cacheDirectory: String {
        ProcessInfo.processInfo.environment["HONE_CACHE"] ?? (NSHomeDirectory() + "/.cache/hone")
    }

    /// Where a base model's learner references are kept between runs
    /// (`Registry.keepReferences`): the learner tests and `ops/chaos` share it.
    public static func referencesFile(modelSHA256 sha: String) -> String {
        cacheDirectory + "/references/\(sha).json"
    }

    /// The first of `candidates` (absolute paths) that is executable, or nil.
    public init?(system candidates: [String]) {
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
        self.path = path
    }

    /// Runs to completion with `stdin` and extra environment; posix_spawn + waitpid and
    /// temporary files, not Foundation's Process, whose waitUntilExit can hang on Linux.
    public func run(_ arguments: [String], stdin: String = "", environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        let dir = NSTemporaryDirectory() + "hone-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (inPath, outPath, errPath) = (dir + "/in", dir + "/out", dir + "/err")
        try stdin.write(toFile: inPath, atomically: true, encoding: .utf8)
        let pid = try spawn(arguments, stdin: inPath, stdout: outPath, stderr: errPath, environment: environment)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        // WEXITSTATUS: the exit code sits in the second byte.
        return ((status >> 8) & 0xff, out, err)
    }

    /// Starts the tool in the background with its output in files; returns its pid.
    public func spawn(_ arguments: [String], stdin: String = "/dev/null", stdout: String, stderr: String,
                      environment: [String: String] = [:]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0)=\($1)") } + [nil]
        defer { for p in envp { free(p) } }
        var pid: pid_t = 0
        let spawned = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                posix_spawn(&pid, path, &actions, nil, UnsafeMutablePointer(mutating: a.baseAddress!), UnsafeMutablePointer(mutating: e.baseAddress!))
            }
        }
        guard spawned == 0 else { throw CocoaError(.executableLoad) }
        return pid
    }
}
