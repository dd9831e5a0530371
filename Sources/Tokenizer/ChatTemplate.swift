/// A chat message: who said it and what.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// ChatML formatting (`<|im_start|>role\ncontent<|im_end|>\n`), the format of SmolLM2 and
/// the Qwen family. When the model's template inserts a default system prompt for
/// conversations that lack one (SmolLM2's does), the same prompt is inserted here.
public struct ChatTemplate: Sendable {
    /// The system prompt used when the conversation has none, read from the template.
    public let defaultSystemPrompt: String?

    /// ChatML, with the default system prompt of the model's `template` (a ChatML template,
    /// see `validate`; nil when the file has none).
    public init(template: String?) {
        defaultSystemPrompt = template.flatMap(Self.defaultSystem(in:))
    }

    /// The prompt text for `messages`, with the assistant turn opened when asked.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var out = ""
        if let system = defaultSystemPrompt, messages.first?.role != "system" {
            out += "<|im_start|>system\n\(system)<|im_end|>\n"
        }
        for m in messages {
            out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    /// Token ids of `messages` (assistant turn opened when asked). The ChatML markers are
    /// control tokens; message content is encoded without control tokens, so text that
    /// contains `<|im_start|>` cannot forge a turn.
    public func tokenize(_ messages: [ChatMessage], with tokenizer: Tokenizer, addGenerationPrompt: Bool = true) -> [Int] {
        var ids = trainingTokens(messages, with: tokenizer).tokens
        if addGenerationPrompt { ids += tokenizer.encode("<|im_start|>assistant\n", parseSpecial: true) }
        return ids
    }

    /// Token ids of a whole conversation and, per token, whether the assistant wrote it:
    /// the content of assistant turns and their closing `<|im_end|>` (so a model learns to
    /// stop), which is what fine-tuning puts the loss on.
    public func trainingTokens(_ messages: [ChatMessage], with tokenizer: Tokenizer) -> (tokens: [Int], assistant: [Bool]) {
        var turns = messages
        if let system = defaultSystemPrompt, messages.first?.role != "system" {
            turns.insert(ChatMessage(role: "system", content: system), at: 0)
        }
        var ids: [Int] = [], assistant: [Bool] = []
        func add(_ part: [Int], _ isAssistant: Bool) {
            ids += part
            assistant += Array(repeating: isAssistant, count: part.count)
        }
        for m in turns {
            let learned = m.role == "assistant"
            add(tokenizer.encode("<|im_start|>\(m.role)\n", parseSpecial: true), false)
            add(tokenizer.encode(m.content, parseSpecial: false), learned)
            add(tokenizer.encode("<|im_end|>", parseSpecial: true), learned)
            add(tokenizer.encode("\n", parseSpecial: false), false)
        }
        return (ids, assistant)
    }

    /// Refuses a GGUF `tokenizer.chat_template` that is not ChatML. Hone renders ChatML only
    /// (nil, no template, falls back to it); a model whose template is something else
    /// (Llama 3's header tokens, Mistral's `[INST]`) is refused when its tokenizer loads
    /// rather than sent prompts in a format it was not trained on.
    public static func validate(_ template: String?) throws {
        guard let template, !template.contains("<|im_start|>") else { return }
        let start = template.prefix(80).replacingOccurrences(of: "\n", with: " ")
        throw ChatTemplateError(description: "the model's chat template is not ChatML (it begins \"\(start)…\"); Hone renders ChatML templates only")
    }

    /// The literal system turn a ChatML template writes for conversations without one.
    static func defaultSystem(in template: String) -> String? {
        // The template's string literal may hold a real newline or the escape `\n`.
        for marker in ["'<|im_start|>system\n", "'<|im_start|>system\\n"] {
            if let start = template.range(of: marker),
               let end = template[start.upperBound...].range(of: "<|im_end|>") {
                return String(template[start.upperBound..<end.lowerBound])
            }
        }
        return nil
    }
}

/// A chat template Hone cannot render faithfully.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
