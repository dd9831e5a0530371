/// Splits text into the words BPE encodes, exactly as llama.cpp does for the `smollm`
/// pre-tokenizer (also starcoder, refact, command-r, codeshell, exaone): first every
/// Unicode number character on its own, then GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` within each
/// piece (llama.cpp's hand-written matcher, whose look-ahead stops at piece ends).
enum PreTokenizer {
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
    static func split(_ text: String) -> [Substring.UnicodeScalarView] {
        let scalars = Array(text.unicodeScalars)
        let flags = scalars.map(Self.flags)
        var words: [Substring.UnicodeScalarView] = []
        let view = text.unicodeScalars
        var indices: [String.UnicodeScalarView.Index] = []
        indices.reserveCapacity(scalars.count + 1)
        var i = view.startIndex
        while i != view.endIndex { indices.append(i); i = view.index(after: i) }
        indices.append(view.endIndex)

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
}
