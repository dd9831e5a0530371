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

    func run(_ arguments: [String], stdin: String = "") throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: BuiltHonectl.path!)
        p.arguments = arguments
        let (i, o, e) = (Pipe(), Pipe(), Pipe())
        p.standardInput = i
        p.standardOutput = o
        p.standardError = e
        try p.run()
        i.fileHandleForWriting.write(Data(stdin.utf8))
        try i.fileHandleForWriting.close()
        let out = o.fileHandleForReading.readDataToEndOfFile()
        let err = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
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
