import ArgumentParser
import Foundation
import Generation
import JSON
import Llama
import Tokenizer
import Training

/// Model options shared by the model commands.
struct ModelOptions: ParsableArguments {
    @Option(help: "GGUF model file (default: $HONE_MODEL).")
    var model: String?

    func load() throws -> (LlamaModel, Tokenizer) {
        guard let path = model ?? ProcessInfo.processInfo.environment["HONE_MODEL"] else {
            throw ValidationError("no model: pass --model PATH or set HONE_MODEL (ops/fetch-model prints the default's path)")
        }
        let llama = try LlamaModel(path: path)
        return (llama, try Tokenizer(gguf: llama.file))
    }
}

/// `honectl generate` — answer a prompt or a chat with the model.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt or chat messages, streaming it to the terminal.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Raw prompt text (no chat template).")
    var prompt: String?

    @Option(help: #"Chat messages as a JSON array, e.g. '[{"role":"user","content":"Hi"}]'; the chat template is applied and the assistant turn opened."#)
    var messages: String?

    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.")
    var maxTokens: Int = 128

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), help: "Sample among the k most likely tokens (0: all).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Nucleus sampling threshold (1: off).")
    var topP: Float = 1

    @Option(help: "Seed for reproducible sampling.")
    var seed: UInt64?

    @Flag(help: "Use float32 weights and activations (the reference path) instead of int16-quantized activations.")
    var exact = false

    @Option(help: "A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to answer with.")
    var adapter: String?

    @Flag(help: #"Print one JSON object {"token_ids":[…],"logprobs":[…],"text":"…"} instead of streaming (logprobs: ln p of each chosen token)."#)
    var json = false

    func validate() throws {
        guard (prompt == nil) != (messages == nil) else { throw ValidationError("give exactly one of --prompt and --messages") }
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        guard temperature >= 0 else { throw ValidationError("--temperature must be ≥ 0") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let promptTokens: [Int], turnStarts: [Int]
        if let messages {
            let parsed: [ChatMessage]
            do {
                parsed = try JSONDecoder().decode([ChatMessage].self, from: Data(messages.utf8))
            } catch {
                throw ValidationError("--messages must be a JSON array of {\"role\", \"content\"} objects")
            }
            (promptTokens, turnStarts) = tokenizer.chatTemplate.prompt(parsed, with: tokenizer)
        } else {
            (promptTokens, turnStarts) = (tokenizer.encode(prompt!), [])
        }
        let request = GenerationRequest(
            promptTokens: promptTokens, turnStarts: turnStarts, maxTokens: maxTokens,
            sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed))
        let lora = try adapter.map { try PEFTAdapter.read(from: $0, model: model) }
        let generator = Generator(model: model, tokenizer: tokenizer, mode: exact ? .exact : .fast, adapter: lora)
        let start = ContinuousClock.now
        var firstToken: ContinuousClock.Instant?
        var logprobs: [JSONValue] = []
        let result = try generator.generate(request) { step in
            if firstToken == nil { firstToken = .now }
            logprobs.append(.double(Double(step.choice.logprob)))
            if !json {
                FileHandle.standardOutput.write(Data(step.text.utf8))
            }
        }
        if json {
            let out = JSONValue.object(["token_ids": .array(result.tokens.map { .int($0) }), "logprobs": .array(logprobs),
                                        "text": .string(result.text)])
            print(out.jsonText)
        } else {
            let end = ContinuousClock.now
            let decodeTokens = max(result.tokens.count - 1, 1)
            let decodeSeconds = firstToken.map { (end - $0) / .seconds(1) } ?? 0
            let prefillSeconds = firstToken.map { ($0 - start) / .seconds(1) } ?? 0
            FileHandle.standardError.write(Data(String(
                format: "\n[%d prompt tokens in %.2f s; %d tokens, %.1f tokens/s; finish: %@]\n",
                result.promptTokenCount, prefillSeconds, result.tokens.count,
                decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0, result.finishReason.rawValue).utf8))
        }
    }
}

/// `honectl tokenize` — token ids of JSON strings read line by line.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read one JSON string per line on stdin; print its token ids as a JSON array per line (no BOS; special tokens recognised).")

    @OptionGroup var modelOptions: ModelOptions

    func run() throws {
        let (_, tokenizer) = try modelOptions.load()
        var lineNumber = 0
        while let line = readLine(strippingNewline: true) {
            lineNumber += 1
            guard case .string(let text)? = try? JSONValue(parsing: line) else {
                FileHandle.standardError.write(Data("honectl tokenize: line \(lineNumber) is not a JSON string\n".utf8))
                throw ExitCode(1)
            }
            print(JSONValue.array(tokenizer.encode(text).map { .int($0) }).jsonText)
        }
    }
}

