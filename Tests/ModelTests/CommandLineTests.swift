import Foundation
import JSON
import Testing

/// The debug `honectl` built beside the tests.
enum BuiltHonectl {
    static let path: String? = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent(".build/debug/honectl").path
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }()
}

/// `honectl generate` and `honectl tokenize` as a user runs them (the built binary).
@Suite("honectl model commands", .enabled(if: RealModel.path != nil && BuiltHonectl.path != nil), .serialized, .timeLimit(.minutes(3)))
struct CommandLineTests {

    /// Runs the built honectl with `stdin`; posix_spawn + waitpid and temporary files, not
    /// Foundation's Process, whose waitUntilExit can hang on Linux.
    func run(_ arguments: [String], stdin: String = "") throws -> (status: Int32, out: String, err: String) {
        let dir = NSTemporaryDirectory() + "hone-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (inPath, outPath, errPath) = (dir + "/in", dir + "/out", dir + "/err")
        try stdin.write(toFile: inPath, atomically: true, encoding: .utf8)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv: [UnsafeMutablePointer<CChar>?] = ([BuiltHonectl.path!] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let spawned = argv.withUnsafeBufferPointer { posix_spawn(&pid, BuiltHonectl.path!, &actions, nil, UnsafeMutablePointer(mutating: $0.baseAddress!), environ) }
        guard spawned == 0 else { throw CocoaError(.executableLoad) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        // WEXITSTATUS: the exit code sits in the second byte.
        return ((status >> 8) & 0xff, out, err)
    }

    @Test func tokenizePrintsOneArrayPerLine() throws {
        let r = try run(["tokenize", "--model", RealModel.path!], stdin: "\"Hello world\"\n\"<|im_start|>user\"\n\"\"\n")
        #expect(r.status == 0)
        #expect(r.out == "[19556,905]\n[1,4093]\n[]\n")
        let bad = try run(["tokenize", "--model", RealModel.path!], stdin: "not json\n")
        #expect(bad.status == 1)
        #expect(bad.err.contains("line 1 is not a JSON string"))
    }

    @Test func generateJSONIsGreedyAndReproducible() throws {
        let messages = #"[{"role":"user","content":"What is the capital of France?"}]"#
        let r = try run(["generate", "--model", RealModel.path!, "--messages", messages, "--max-tokens", "12", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let value = try JSONValue(parsing: r.out)
        #expect(value["text"]?.stringValue?.contains("Paris") == true, "\(r.out)")
        #expect((value["token_ids"]?.arrayValue?.count ?? 0) > 0)
        let again = try run(["generate", "--model", RealModel.path!, "--messages", messages, "--max-tokens", "12", "--json"])
        #expect(again.out == r.out)
    }

    @Test func badUsageExitsWithTwo() throws {
        let both = try run(["generate", "--model", RealModel.path!, "--prompt", "x", "--messages", "[]"])
        #expect(both.status == 64 || both.status == 2, "ArgumentParser's validation exit code")
        #expect(both.err.contains("exactly one of --prompt and --messages"))
        let missing = try run(["generate", "--model", "/nonexistent.gguf", "--prompt", "x"])
        #expect(missing.status != 0)
        #expect(missing.err.contains("cannot open /nonexistent.gguf"))
    }
}
