#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A chat message: who said it and what.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The model's chat format, recognised from its GGUF `tokenizer.chat_template` and rendered
/// as that Jinja template renders conversations of plain text turns (no tools):
/// - ChatML (`<|im_start|>role\ncontent<|im_end|>\n`, SmolLM2 and Qwen2), with the default
///   system turn the template writes when a conversation has none;
/// - Llama 3 (`<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`, content
///   trimmed, BOS first), and Llama 3.1+'s system turn that always opens with its knowledge
///   cutoff and today's date.
/// A template of another family is refused when the tokenizer loads (`init` throws) rather
/// than sent prompts in a format the model was not trained on. `Tests/ModelTests/Fixtures/
/// chat-templates.json` holds transformers' renderings of each family's real template.
public struct ChatTemplate: Sendable {
    /// The families Hone renders.
    public enum Format: Sendable, Equatable {
        case chatML(defaultSystem: String?)
        /// `dateHeader` nil: Llama 3.0 (turns only); otherwise Llama 3.1+'s system turn.
        case llama3(dateHeader: DateHeader?)
    }

    /// Where Llama 3.1+'s "Today Date:" comes from when the caller gives none: the
    /// template's literal default ("26 Jul 2024" in 3.1) or, for templates that call
    /// `strftime_now` (3.2, 3.3), the local date as `%d %b %Y`.
    public enum DateHeader: Sendable, Equatable {
        case fixed(String)
        case today
    }

    public let format: Format
    /// The BOS token's text (the template's `bos_token`).
    let bosToken: String

    /// The format of `template` (nil, no template: ChatML without a default system turn).
    /// Throws for a template Hone cannot render faithfully.
    public init(template: String?, bosToken: String? = nil) throws {
        self.bosToken = bosToken ?? ""
        guard let template else {
            format = .chatML(defaultSystem: nil)
            return
        }
        if template.contains("<|im_start|>") {
            format = .chatML(defaultSystem: Self.defaultSystem(in: template))
        } else if template.contains("<|start_header_id|>") && template.contains("<|eot_id|>") {
            guard bosToken != nil else { throw ChatTemplateError(description: "the model's Llama 3 chat template needs a BOS token and the vocabulary has none") }
            if template.contains("Cutting Knowledge Date: December 2023") {
                format = .llama3(dateHeader: template.contains("strftime_now") ? .today : .fixed(Self.literalDate(in: template) ?? "26 Jul 2024"))
            } else {
                format = .llama3(dateHeader: nil)
            }
        } else {
            let start = template.prefix(80).replacingOccurrences(of: "\n", with: " ")
            throw ChatTemplateError(description: "the model's chat template is neither ChatML nor Llama 3 (it begins \"\(start)…\"); Hone renders those two families only")
        }
    }

    /// The control tokens the format writes; each must be one token of the vocabulary.
    public var controlTokens: [String] {
        switch format {
        case .chatML: ["<|im_start|>", "<|im_end|>"]
        case .llama3: [bosToken, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        }
    }

    /// One stretch of a rendered conversation: control text (special tokens, parsed as
    /// such) or plain text (never parsed for special tokens, so a message cannot forge a
    /// turn), and whether the assistant wrote it (what fine-tuning puts the loss on: the
    /// content of assistant turns and their end marker, so a model learns to stop).
    struct Piece {
        let text: String
        let control: Bool
        let assistant: Bool
    }

    /// The conversation as the template writes it. `dateString` is the template's
    /// `date_string` (Llama 3.1+); nil takes the template's own default.
    func pieces(_ messages: [ChatMessage], addGenerationPrompt: Bool, dateString: String?) -> [Piece] {
        var out: [Piece] = []
        func control(_ text: String, assistant: Bool = false) { out.append(Piece(text: text, control: true, assistant: assistant)) }
        func text(_ text: String, assistant: Bool = false) { out.append(Piece(text: text, control: false, assistant: assistant)) }
        switch format {
        case .chatML(let defaultSystem):
            var turns = messages
            if let defaultSystem, messages.first?.role != "system" {
                turns.insert(ChatMessage(role: "system", content: defaultSystem), at: 0)
            }
            for m in turns {
                let learned = m.role == "assistant"
                control("<|im_start|>")
                text("\(m.role)\n")
                text(m.content, assistant: learned)
                control("<|im_end|>", assistant: learned)
                text("\n")
            }
            if addGenerationPrompt {
                control("<|im_start|>")
                text("assistant\n")
            }
        case .llama3(let dateHeader):
            func header(_ role: String) {
                control("<|start_header_id|>")
                text(role)
                control("<|end_header_id|>")
                text("\n\n")
            }
            var turns = messages[...]
            if !turns.isEmpty || dateHeader != nil { control(bosToken) }
            if let dateHeader {
                var system = ""
                if turns.first?.role == "system" { system = Self.trimmed(turns.removeFirst().content) }
                let date = dateString ?? {
                    switch dateHeader {
                    case .fixed(let date): date
                    case .today: Self.today()
                    }
                }()
                header("system")
                text("Cutting Knowledge Date: December 2023\nToday Date: \(date)\n\n\(system)")
                control("<|eot_id|>")
            }
            for m in turns {
                let learned = m.role == "assistant"
                header(m.role)
                text(Self.trimmed(m.content), assistant: learned)
                control("<|eot_id|>", assistant: learned)
            }
            if addGenerationPrompt { header("assistant") }
        }
        return out.filter { !$0.text.isEmpty }
    }

    /// The prompt text for `messages`, with the assistant turn opened when asked.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true, dateString: String? = nil) -> String {
        pieces(messages, addGenerationPrompt: addGenerationPrompt, dateString: dateString).map(\.text).joined()
    }

    /// Token ids of `messages` (assistant turn opened when asked).
    public func tokenize(_ messages: [ChatMessage], with tokenizer: Tokenizer, addGenerationPrompt: Bool = true,
                         dateString: String? = nil) -> [Int] {
        prompt(messages, with: tokenizer, addGenerationPrompt: addGenerationPrompt, dateString: dateString).tokens
    }

    /// Token ids of `messages` and the offsets where each turn after the first begins (the
    /// generation prompt's included): the points where prompts share prefixes, the default
    /// system turn or a conversation's earlier turns (see `PrefixCache`).
    public func prompt(_ messages: [ChatMessage], with tokenizer: Tokenizer, addGenerationPrompt: Bool = true,
                       dateString: String? = nil) -> (tokens: [Int], turnStarts: [Int]) {
        var ids: [Int] = [], starts: [Int] = []
        for piece in pieces(messages, addGenerationPrompt: addGenerationPrompt, dateString: dateString) {
            if piece.control, piece.text == "<|im_start|>" || piece.text == "<|start_header_id|>", !ids.isEmpty { starts.append(ids.count) }
            ids += tokenizer.encode(piece.text, parseSpecial: piece.control)
        }
        return (ids, starts)
    }

    /// Token ids of a whole conversation and, per token, whether the assistant wrote it.
    public func trainingTokens(_ messages: [ChatMessage], with tokenizer: Tokenizer) -> (tokens: [Int], assistant: [Bool]) {
        tokens(pieces(messages, addGenerationPrompt: false, dateString: nil), with: tokenizer)
    }

    private func tokens(_ pieces: [Piece], with tokenizer: Tokenizer) -> (tokens: [Int], assistant: [Bool]) {
        var ids: [Int] = [], assistant: [Bool] = []
        for piece in pieces {
            let part = tokenizer.encode(piece.text, parseSpecial: piece.control)
            ids += part
            assistant += Array(repeating: piece.assistant, count: part.count)
        }
        return (ids, assistant)
    }

    /// The literal system turn a ChatML template writes for conversations without one: the
    /// text between `'<|im_start|>system\n` and `<|im_end|>` inside one string literal
    /// (Qwen2.5's template also opens a system turn whose content comes from elsewhere).
    static func defaultSystem(in template: String) -> String? {
        // The template's string literal may hold a real newline or the escape `\n`.
        for marker in ["'<|im_start|>system\n", "'<|im_start|>system\\n"] {
            var rest = template[...]
            while let start = rest.range(of: marker) {
                rest = template[start.upperBound...]
                guard let end = rest.range(of: "<|im_end|>") else { break }
                let content = rest[..<end.lowerBound]
                if !content.contains("'") { return String(content) }
            }
        }
        return nil
    }

    /// A Llama 3.1 template's default `date_string` (`set date_string = "26 Jul 2024"`).
    static func literalDate(in template: String) -> String? {
        guard let set = template.range(of: "set date_string = \""),
              let end = template[set.upperBound...].firstIndex(of: "\"") else { return nil }
        return String(template[set.upperBound..<end])
    }

    /// Jinja's `trim` (Python's `str.strip()`): Unicode whitespace and the separators
    /// U+001C–U+001F off both ends.
    static func trimmed(_ text: String) -> String {
        func isSpace(_ c: Character) -> Bool {
            c.unicodeScalars.allSatisfy { $0.properties.isWhitespace || (0x1C...0x1F).contains($0.value) }
        }
        guard let first = text.firstIndex(where: { !isSpace($0) }), let last = text.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(text[first...last])
    }

    /// Today's local date as `strftime_now("%d %b %Y")` writes it, e.g. "30 Nov 2026".
    static func today() -> String {
        var now = time(nil), parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%d %b %Y", &parts)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A chat template Hone cannot render faithfully.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
