import Foundation
import GGUF
import JSON
import Learning
import Llama
import Queue
import Server
import Tokenizer
import Training

/// Every parser that takes input from outside, as one function of arbitrary bytes each.
/// A target may throw (that is the parser refusing the input with a reason) but must never
/// trap, hang or leak. `ops/fuzz` runs them under libFuzzer with AddressSanitizer (the
/// `Fuzz/` package); the unit tests run every input of the committed corpus through them,
/// so each input a fuzzer ever found stays a regression test.
///
/// Targets that need the model (`tokenizer`, `adapter`) use `HONE_MODEL`.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// A GGUF file: header, metadata, tensor table; then the model config and tokenizer read from it.
    case gguf
    /// A PEFT/registry adapter: a safetensors file, then its tensors checked against the model.
    case adapter
    /// A `/v1/chat/completions` or `/v1/completions` body (the first byte picks which).
    case request
    /// A job payload of each kind (schema check, messages, verifier spec and a verdict).
    case payload
    /// A JSON Schema and an instance, separated by the first NUL byte.
    case schema
    /// Text encoded and decoded by the model's tokenizer, and rendered as a chat turn.
    case tokenizer

    /// Runs the target on `bytes`; refusals are swallowed, traps are the finding.
    public func run(_ bytes: [UInt8]) {
        do {
            switch self {
            case .gguf: try Self.gguf(bytes)
            case .adapter: try Self.adapter(bytes)
            case .request: try Self.request(bytes)
            case .payload: try Self.payload(bytes)
            case .schema: try Self.schema(bytes)
            case .tokenizer: Self.tokenizer(bytes)
            }
        } catch {
            _ = "\(error)"  // Every refusal must render its reason without trapping.
        }
    }

    // MARK: Targets

    static func gguf(_ bytes: [UInt8]) throws {
        let path = scratchFile()
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let file = try GGUFFile(path: path)
        for (_, value) in file.metadata { _ = "\(value)" }
        for info in file.tensors.values { _ = file.data(of: info).count }
        _ = try? LlamaConfig(gguf: file)
        _ = try? Tokenizer(gguf: file)
    }

    static func adapter(_ bytes: [UInt8]) throws {
        let file = try SafeTensors(bytes: bytes, name: "fuzz.safetensors")
        guard let model = Shared.model else { return }
        _ = try PEFTAdapter.read(weights: file, model: model, source: "fuzz")
    }

    static let server = ServerConfiguration()

    static func request(_ bytes: [UInt8]) throws {
        guard let first = bytes.first else { return }
        try HoneServer.validateCompletionBody(Data(bytes.dropFirst()), chat: first & 1 == 0, configuration: server)
    }

    static func payload(_ bytes: [UInt8]) throws {
        let json = try JSONValue(parsing: Data(bytes))
        if let catalogue = Shared.catalogue {
            for kind in catalogue.kinds.keys.sorted() { _ = catalogue.rejection(kind: kind, payload: json) }
        }
        _ = ChatMessage.list(from: json["messages"] ?? .null)
        if let spec = json["verifier"] {
            let verifier = try Verifier(spec)
            _ = verifier.check(json["reference"]?.stringValue ?? json["prompt"]?.stringValue ?? "")
        }
    }

    static func schema(_ bytes: [UInt8]) throws {
        let split = bytes.firstIndex(of: 0) ?? bytes.endIndex
        let schema = try JSONSchema(parsing: String(decoding: bytes[..<split], as: UTF8.self))
        let instance = try JSONValue(parsing: Data(bytes[min(split + 1, bytes.endIndex)...]))
        for failure in schema.validate(instance) { _ = failure.description }
    }

    static func tokenizer(_ bytes: [UInt8]) {
        guard let tokenizer = Shared.tokenizer else { return }
        let text = String(decoding: bytes, as: UTF8.self)
        let special = tokenizer.encode(text, parseSpecial: true)
        let plain = tokenizer.encode(text, parseSpecial: false)
        _ = tokenizer.decode(special)
        // Plain text round-trips exactly, but for the bytes the vocabulary has no token for.
        let decoded = tokenizer.decode(plain)
        let expected = String(decoding: text.utf8.filter { tokenizer.encodes(byte: $0) }, as: UTF8.self)
        precondition(decoded == expected, "tokenizer round trip changed \(Array(text.utf8)) into \(Array(decoded.utf8))")
        let template = tokenizer.chatTemplate
        _ = template.tokenize([ChatMessage(role: "user", content: text)], with: tokenizer)
    }

    // MARK: Shared state

    /// Loaded once per process: the model (for adapter shapes), its tokenizer, the job catalogue.
    enum Shared {
        static let model: LlamaModel? = ProcessInfo.processInfo.environment["HONE_MODEL"].flatMap { try? LlamaModel(path: $0) }
        static let tokenizer: Tokenizer? = model.flatMap { try? Tokenizer(gguf: $0.file) }
        static let catalogue: JobCatalogue? = try? JobCatalogue(directory: URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("jobs"))
    }

    /// A per-process scratch path in shared memory (GGUF is read through mmap of a file).
    static func scratchFile() -> String {
        let dir = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return dir + "/hone-fuzz-\(getpid()).gguf"
    }
}
