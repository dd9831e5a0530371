import GGUF
import Synchronization

/// Byte-level BPE from a GGUF file's vocabulary and merges (`tokenizer.ggml.model` =
/// `gpt2`), with special tokens matched before BPE. Encodes exactly like llama.cpp.
public final class Tokenizer: Sendable {
    /// Token kinds (GGUF `tokenizer.ggml.token_type`).
    public enum TokenType: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6

        /// Matched as a whole before BPE (llama.cpp's partition).
        var isSpecial: Bool { [.control, .userDefined, .unknown].contains(self) }
    }

    /// Token texts by id (byte-level text for normal tokens).
    public let tokens: [String]
    public let types: [TokenType]
    public let bosID: Int?
    public let eosID: Int?
    /// Tokens that end generation: EOS and the chat format's end markers.
    public let endOfGeneration: Set<Int>
    /// Whether a prompt starts with BOS (`tokenizer.ggml.add_bos_token`; Llama 3 yes,
    /// SmolLM2 no). Chat prompts get theirs from the template.
    public let addsBOS: Bool
    /// The model's chat format, from the file's `tokenizer.chat_template` (Jinja source).
    public let chatTemplate: ChatTemplate

    private let ids: [String: Int]
    /// Merge rank by "left right".
    private let ranks: [String: Int]
    /// Special tokens, longest first (llama.cpp's partition order).
    private let specials: [(text: String, id: Int, type: TokenType)]
    private let cache = Mutex<[String: [Int]]>([:])
    private let preTokenizer: PreTokenizer.Style

    public init(gguf: GGUFFile) throws {
        let model = gguf.metadata["tokenizer.ggml.model"]?.stringValue
        guard model == "gpt2" else {
            throw GGUFError("tokenizer model \(model ?? "(none)") is not supported (only byte-level BPE, \"gpt2\")")
        }
        let pre = gguf.metadata["tokenizer.ggml.pre"]?.stringValue ?? "default"
        guard let style = PreTokenizer.Style(gguf: pre) else {
            throw GGUFError("pre-tokenizer \(pre) is not supported (Hone splits like llama.cpp for \(PreTokenizer.Style.supportedNames.joined(separator: ", ")))")
        }
        preTokenizer = style
        guard let tokenValues = gguf.metadata["tokenizer.ggml.tokens"]?.arrayValue else {
            throw GGUFError("the file has no tokenizer.ggml.tokens")
        }
        let tokens = tokenValues.map { $0.stringValue ?? "" }
        let typeValues = gguf.metadata["tokenizer.ggml.token_type"]?.arrayValue ?? []
        let types = tokens.indices.map { i in
            i < typeValues.count ? TokenType(rawValue: typeValues[i].intValue ?? 1) ?? .normal : .normal
        }
        self.tokens = tokens
        self.types = types
        var ids: [String: Int] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }
        self.ids = ids
        var ranks: [String: Int] = [:]
        for (rank, merge) in (gguf.metadata["tokenizer.ggml.merges"]?.arrayValue ?? []).enumerated() {
            if let m = merge.stringValue { ranks[m] = rank }
        }
        self.ranks = ranks
        bosID = gguf.metadata["tokenizer.ggml.bos_token_id"]?.intValue
        eosID = gguf.metadata["tokenizer.ggml.eos_token_id"]?.intValue
        addsBOS = gguf.metadata["tokenizer.ggml.add_bos_token"]?.boolValue ?? false
        let templateSource = gguf.metadata["tokenizer.chat_template"]?.stringValue
        chatTemplate = try ChatTemplate(template: templateSource, bosToken: bosID.flatMap { tokens.indices.contains($0) ? tokens[$0] : nil })
        specials = tokens.indices
            .filter { types[$0].isSpecial && !tokens[$0].isEmpty }
            .map { (tokens[$0], $0, types[$0]) }
            .sorted { $0.text.utf8.count > $1.text.utf8.count }
        // A template's markers must be special tokens, or prompts would spell them as text.
        if templateSource != nil, let missing = chatTemplate.controlTokens.first(where: { ids[$0].map { !types[$0].isSpecial } ?? true }) {
            throw GGUFError("the chat template writes \(missing), which is not a special token of the vocabulary")
        }
        var eog = Set<Int>()
        if let eosID { eog.insert(eosID) }
        for marker in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"] {
            if let id = ids[marker] { eog.insert(id) }
        }
        endOfGeneration = eog
    }

    /// The id of a token's exact text, if it is in the vocabulary.
    public func id(of token: String) -> Int? { ids[token] }

    /// Whether a lone byte has a token. A byte-level vocabulary may lack some (SmolLM2's has
    /// no token for several control bytes); `encode` drops such bytes, as llama.cpp and
    /// Hugging Face's tokenizers do, so text with them does not decode back unchanged.
    public func encodes(byte: UInt8) -> Bool { ids[ByteLevel.encode([byte])] != nil }

    /// Token ids of `text`. With `parseSpecial`, control tokens written in the text (such as
    /// `<|im_start|>`) become their ids; without it only user-defined tokens do. No BOS.
    public func encode(_ text: String, parseSpecial: Bool = true) -> [Int] {
        var out: [Int] = []
        for fragment in partition(text, parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id): out.append(id)
            case .text(let t):
                for word in PreTokenizer.split(t, style: preTokenizer) { out += bpe(String(String.UnicodeScalarView(word))) }
            }
        }
        return out
    }

    /// Token ids of a raw text prompt (a text completion): BOS first when the model adds one,
    /// as llama.cpp does, and no special tokens parsed, so a prompt cannot forge one.
    public func encodePrompt(_ text: String) -> [Int] {
        (addsBOS ? bosID.map { [$0] } ?? [] : []) + encode(text, parseSpecial: false)
    }

    private enum Fragment { case text(String), special(Int) }

    /// Splits out special tokens, longest first over the whole text, as llama.cpp does.
    private func partition(_ text: String, parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(text)]
        for special in specials {
            if !parseSpecial && special.type != .userDefined { continue }
            var next: [Fragment] = []
            for fragment in fragments {
                guard case .text(let t) = fragment, t.contains(special.text) else {
                    next.append(fragment)
                    continue
                }
                var rest = Substring(t)
                while let r = rest.range(of: special.text) {
                    if r.lowerBound > rest.startIndex { next.append(.text(String(rest[..<r.lowerBound]))) }
                    next.append(.special(special.id))
                    rest = rest[r.upperBound...]
                }
                if !rest.isEmpty { next.append(.text(String(rest))) }
            }
            fragments = next
        }
        return fragments
    }

    /// BPE of one pre-token word: merge the adjacent pair of lowest rank (leftmost on ties)
    /// until none merges; symbols not in the vocabulary fall back to their bytes. Llama 3
    /// vocabularies take a word that is itself a token whole (llama.cpp's `ignore_merges`).
    private func bpe(_ word: String) -> [Int] {
        if let hit = cache.withLock({ $0[word] }) { return hit }
        let text = ByteLevel.encode(word.utf8)
        if preTokenizer == .llama3, let whole = ids[text] { return [whole] }
        var symbols = text.unicodeScalars.map { String($0) }
        if ids[text] == nil || symbols.count > 1 {
            while symbols.count > 1 {
                var best = Int.max, at = -1
                for i in 0..<(symbols.count - 1) {
                    if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < best { best = r; at = i }
                }
                if at < 0 { break }
                symbols[at] += symbols[at + 1]
                symbols.remove(at: at + 1)
            }
        }
        var out: [Int] = []
        for s in symbols {
            if let id = ids[s] {
                out.append(id)
            } else {
                for scalar in s.unicodeScalars { if let id = ids[String(scalar)] { out.append(id) } }
            }
        }
        cache.withLock { c in
            if c.count > 50_000 { c.removeAll() }
            c[word] = out
        }
        return out
    }

    /// The bytes a token stands for: byte-level text decoded for normal tokens, the text
    /// itself for control and user-defined tokens.
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < tokens.count else { return [] }
        switch types[id] {
        case .normal, .byte, .unused:
            return ByteLevel.decode(tokens[id]) ?? Array(tokens[id].utf8)
        case .control, .userDefined, .unknown:
            return Array(tokens[id].utf8)
        }
    }

    /// The text of token ids (invalid UTF-8 across an incomplete sequence is replaced).
    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.flatMap { bytes(of: $0) }, as: UTF8.self)
    }
}

/// Turns a stream of tokens into text without ever emitting half a UTF-8 character:
/// bytes of an incomplete character wait for the next token.
public struct StreamingDecoder: Sendable {
    private var pending: [UInt8] = []
    public init() {}

    /// Adds a token's bytes; returns the text that is complete now.
    public mutating func append(_ bytes: [UInt8]) -> String {
        pending += bytes
        let complete = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is left at the end (an incomplete character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the prefix that does not end inside a multi-byte character.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var i = bytes.count - 1
        var back = 0
        while i >= 0 && back < 4 {
            let b = bytes[i]
            if b & 0xC0 != 0x80 {
                let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return back + 1 >= need ? bytes.count : i
            }
            i -= 1
            back += 1
        }
        return bytes.count
    }
}
