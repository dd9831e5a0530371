import Foundation
import JSON
import Tensor
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

    @Test("an OPENBLAS_CORETYPE inherited from the environment gives way to the kernel level's; HONE_BLAS_CORETYPE picks one")
    func blasCoreTypeFollowsTheKernelLevel() throws {
        func cpu(_ environment: [String: String]) throws -> (coreType: String, err: String) {
            // HONE_NO_REEXEC empty: this is a first start, as a user's.
            let r = try BuiltHonectl.tool!.run(["cpu", "--json"], environment: environment.merging(["HONE_NO_REEXEC": ""]) { a, _ in a })
            #expect(r.status == 0, "\(r.err)")
            return (try JSONValue(parsing: r.out)["blas_core_type"]?.stringValue ?? "", r.err)
        }
        // "Prescott" is a core type no kernel level picks, as the machine image's Haswell on an AVX-512 CPU.
        let inherited = try cpu(["OPENBLAS_CORETYPE": "Prescott"])
        if let levels = CPUEnvironment.blasCoreType(for: .active) {
            #expect(inherited.coreType == levels)
            #expect(inherited.err.contains("OPENBLAS_CORETYPE=Prescott from the environment replaced by \(levels)"))
        } else {
            #expect(inherited.coreType == "Prescott", "the portable level leaves OpenBLAS's choice alone")
        }
        let chosen = try cpu(["OPENBLAS_CORETYPE": "SkylakeX", "HONE_BLAS_CORETYPE": "Haswell"])
        #expect(chosen.coreType == "Haswell")
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
