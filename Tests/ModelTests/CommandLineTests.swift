import Foundation
import JSON
import Testing
import BuiltTools

/// The debug `honectl` built beside the tests.
enum BuiltHonectl {
    static let tool = BuiltTool("honectl")
    static var path: String? { tool?.path }
}

/// `honectl generate` and `honectl tokenize` as a user runs them (the built binary).
@Suite("honectl model commands", .enabled(if: RealModel.path != nil && BuiltHonectl.path != nil), .serialized, .timeLimit(.minutes(3)))
struct CommandLineTests {

    func run(_ arguments: [String], stdin: String = "") throws -> (status: Int32, out: String, err: String) {
        try BuiltHonectl.tool!.run(arguments, stdin: stdin)
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
