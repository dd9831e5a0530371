/// Splits text into the words BPE encodes, exactly as llama.cpp does for the pre-tokenizer a
/// GGUF names (`tokenizer.ggml.pre`). Styles:
/// - `smollm` (also starcoder, refact, command-r, codeshell, exaone): every Unicode number
///   character on its own, then GPT-2's pattern
///   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` within each
///   piece (llama.cpp's hand-written matcher, whose look-ahead stops at piece ends);
/// - `llama3` (llama-bpe, Llama 3.x): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|
///   \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, as llama.cpp's
///   custom matcher reads it;
/// - `qwen2`: the same pattern with one number character per word (`\p{N}`).
enum PreTokenizer {
    enum Style: Sendable {
        case smollm, llama3, qwen2

        /// The style of a GGUF `tokenizer.ggml.pre` name, nil for one Hone does not split like llama.cpp.
        init?(gguf name: String) {
            switch name {
            case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone": self = .smollm
            case "llama-bpe", "llama3", "llama-v3": self = .llama3
            case "qwen2": self = .qwen2
            default: return nil
            }
        }

        /// The names `init(gguf:)` accepts, for error messages.
        static let supportedNames = ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone",
                                     "llama-bpe", "llama3", "llama-v3", "qwen2"]
    }

    /// Character classes of the pattern.
    struct Flags: OptionSet {
        let rawValue: UInt8
        static let letter = Flags(rawValue: 1)
        static let number = Flags(rawValue: 2)
        static let whitespace = Flags(rawValue: 4)
        /// Anything that is a character at all (out-of-range positions have no flags).
        static let any = Flags(rawValue: 8)
    }

    static func flags(_ s: Unicode.Scalar) -> Flags {
        var f: Flags = .any
        if s.properties.isWhitespace { f.insert(.whitespace) }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            f.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            f.insert(.number)
        default:
            break
        }
        return f
    }

    /// The words of `text`, in order; concatenated they are `text`.
    static func split(_ text: String, style: Style = .smollm) -> [Substring.UnicodeScalarView] {
        let scalars = Array(text.unicodeScalars)
        let flags = scalars.map(Self.flags)
        var words: [Substring.UnicodeScalarView] = []
        let view = text.unicodeScalars
        var indices: [String.UnicodeScalarView.Index] = []
        indices.reserveCapacity(scalars.count + 1)
        var i = view.startIndex
        while i != view.endIndex { indices.append(i); i = view.index(after: i) }
        indices.append(view.endIndex)

        if style != .smollm {
            llama3(scalars, flags, maxDigits: style == .llama3 ? 3 : 1, &words, view, indices)
            return words
        }
        // Stage 1: \p{N} — each number character is a piece; the text between is a piece.
        var pieceStart = 0
        for (p, f) in flags.enumerated() where f.contains(.number) {
            if pieceStart < p { gpt2(scalars, flags, pieceStart, p, &words, view, indices) }
            words.append(view[indices[p]..<indices[p + 1]])
            pieceStart = p + 1
        }
        if pieceStart < scalars.count { gpt2(scalars, flags, pieceStart, scalars.count, &words, view, indices) }
        return words
    }

    /// Stage 2 over `start..<end`: llama.cpp's `unicode_regex_split_custom_gpt2`.
    private static func gpt2(_ cpts: [Unicode.Scalar], _ allFlags: [Flags], _ start: Int, _ end: Int,
                             _ words: inout [Substring.UnicodeScalarView],
                             _ view: String.UnicodeScalarView, _ indices: [String.UnicodeScalarView.Index]) {
        func cpt(_ p: Int) -> UInt32? { p < end ? cpts[p].value : nil }
        func flags(_ p: Int) -> Flags { p < end ? allFlags[p] : [] }
        var last = start
        func add(_ p: Int) {
            if last < p { words.append(view[indices[last]..<indices[p]]) }
            last = p
        }
        let apostrophe: UInt32 = 0x27, space: UInt32 = 0x20
        var pos = start
        while pos < end {
            let c = cpts[pos].value
            let f = allFlags[pos]
            // 's|'t|'re|'ve|'m|'ll|'d
            if c == apostrophe, let next = cpt(pos + 1) {
                if [0x73, 0x74, 0x6D, 0x64].contains(next) {  // s t m d
                    pos += 2; add(pos); continue
                }
                if let next2 = cpt(pos + 2),
                   (next == 0x72 && next2 == 0x65) || (next == 0x76 && next2 == 0x65) || (next == 0x6C && next2 == 0x6C) {
                    pos += 3; add(pos); continue  // re ve ll
                }
            }
            var f2 = c == space ? flags(pos + 1) : f
            // ` ?\p{L}+`
            if f2.contains(.letter) {
                if c == space { pos += 1 }
                while f2.contains(.letter) { pos += 1; f2 = flags(pos) }
                add(pos); continue
            }
            // ` ?\p{N}+`
            if f2.contains(.number) {
                if c == space { pos += 1 }
                while f2.contains(.number) { pos += 1; f2 = flags(pos) }
                add(pos); continue
            }
            // ` ?[^\s\p{L}\p{N}]+`
            if f2.isDisjoint(with: [.whitespace, .letter, .number]) && f2.contains(.any) {
                if c == space { pos += 1 }
                while f2.isDisjoint(with: [.whitespace, .letter, .number]) && f2.contains(.any) { pos += 1; f2 = flags(pos) }
                add(pos); continue
            }
            var spaces = 0
            while flags(pos + spaces).contains(.whitespace) { spaces += 1 }
            // `\s+(?!\S)`: all but the last space when a non-space follows inside the piece.
            if spaces > 1, cpt(pos + spaces) != nil {
                pos += spaces - 1; add(pos); continue
            }
            // `\s+`
            if spaces > 0 {
                pos += spaces; add(pos); continue
            }
            pos += 1; add(pos)
        }
    }

    /// The Llama 3 pattern over the whole text (qwen2's with `maxDigits` 1).
    private static func llama3(_ cpts: [Unicode.Scalar], _ allFlags: [Flags], maxDigits: Int,
                               _ words: inout [Substring.UnicodeScalarView],
                               _ view: String.UnicodeScalarView, _ indices: [String.UnicodeScalarView.Index]) {
        let end = cpts.count
        func cpt(_ p: Int) -> UInt32? { p < end ? cpts[p].value : nil }
        func flags(_ p: Int) -> Flags { p < end ? allFlags[p] : [] }
        func lower(_ c: UInt32?) -> UInt32? {
            guard let c, let s = Unicode.Scalar(c) else { return c }
            return s.properties.lowercaseMapping.unicodeScalars.first?.value ?? c
        }
        var last = 0
        func add(_ p: Int) {
            if last < p { words.append(view[indices[last]..<indices[p]]) }
            last = p
        }
        let cr: UInt32 = 0x0D, lf: UInt32 = 0x0A, space: UInt32 = 0x20
        var pos = 0
        while pos < end {
            let c = cpts[pos].value
            let f = allFlags[pos]
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == 0x27, pos + 1 < end, let next = lower(cpt(pos + 1)) {
                if [0x73, 0x74, 0x6D, 0x64].contains(next) {  // s t m d
                    pos += 2; add(pos); continue
                }
                if pos + 2 < end, let next2 = lower(cpt(pos + 2)),
                   (next == 0x72 && next2 == 0x65) || (next == 0x76 && next2 == 0x65) || (next == 0x6C && next2 == 0x6C) {
                    pos += 3; add(pos); continue  // re ve ll
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == cr || c == lf || f.contains(.number)), f.contains(.letter) || flags(pos + 1).contains(.letter) {
                pos += 1
                while flags(pos).contains(.letter) { pos += 1 }
                add(pos); continue
            }
            // \p{N}{1,3} (or \p{N})
            if f.contains(.number) {
                var start = pos
                while flags(pos).contains(.number) {
                    pos += 1
                    if pos - start >= maxDigits { add(pos); start = pos }
                }
                add(pos); continue
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            var f2 = c == space ? flags(pos + 1) : f
            if f2.isDisjoint(with: [.whitespace, .letter, .number]) && f2.contains(.any) {
                if c == space { pos += 1 }
                while f2.isDisjoint(with: [.whitespace, .letter, .number]) && f2.contains(.any) { pos += 1; f2 = flags(pos) }
                while cpt(pos) == cr || cpt(pos) == lf { pos += 1 }
                add(pos); continue
            }
            var spaces = 0, afterNewline = 0
            while flags(pos + spaces).contains(.whitespace) {
                if cpt(pos + spaces) == cr || cpt(pos + spaces) == lf { afterNewline = pos + spaces + 1 }
                spaces += 1
            }
            // \s*[\r\n]+
            if afterNewline > 0 { pos = afterNewline; add(pos); continue }
            // \s+(?!\S)
            if spaces > 1, cpt(pos + spaces) != nil { pos += spaces - 1; add(pos); continue }
            // \s+
            if spaces > 0 { pos += spaces; add(pos); continue }
            pos += 1; add(pos)
        }
    }
}
