import Foundation
import FuzzTargets
import Tensor
import Testing

/// The fuzz targets in the ordinary debug build: every input under `Fuzz/Corpus/TARGET/`
/// (the committed seeds, and each input a fuzzer found a fault with, kept after the fix),
/// then a short seeded mutation run from those seeds. `ops/fuzz` runs the long,
/// coverage-guided version under libFuzzer and AddressSanitizer.
@Suite("Fuzz targets")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus")

    /// Mutated inputs per target: about two seconds a target in the debug build.
    static let mutations = 20_000

    static func seeds(_ target: FuzzTarget) throws -> [[UInt8]] {
        let dir = corpus.appendingPathComponent(target.rawValue)
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().map {
            Array(try Data(contentsOf: dir.appendingPathComponent($0)))
        }
    }

    @Test("every committed fuzz input runs through its parser without trapping", arguments: FuzzTarget.allCases)
    func corpus(_ target: FuzzTarget) throws {
        let seeds = try Self.seeds(target)
        #expect(!seeds.isEmpty, "no seeds for \(target.rawValue)")
        for seed in seeds { target.run(seed) }
    }

    @Test("seeded mutations of the corpus run through their parser without trapping", arguments: FuzzTarget.allCases)
    func mutations(_ target: FuzzTarget) throws {
        let seeds = try Self.seeds(target)
        var random = SeededRandom(seed: UInt64(target.rawValue.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        for _ in 0..<Self.mutations {
            target.run(Self.mutate(seeds[Int(random.next() % UInt64(seeds.count))], others: seeds, random: &random))
        }
    }

    /// libFuzzer's simplest mutations, one to four at a time: flip, set, insert or erase
    /// bytes, copy a run within the input, splice in part of another seed.
    static func mutate(_ input: [UInt8], others: [[UInt8]], random: inout SeededRandom) -> [UInt8] {
        var bytes = input
        let interesting: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, UInt8(ascii: "{"), UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "-")]
        func index(_ count: Int) -> Int { count == 0 ? 0 : Int(random.next() % UInt64(count)) }
        for _ in 0..<(1 + index(4)) {
            switch random.next() % 6 {
            case 0 where !bytes.isEmpty: bytes[index(bytes.count)] ^= UInt8(1 << index(8))
            case 1 where !bytes.isEmpty: bytes[index(bytes.count)] = interesting[index(interesting.count)]
            case 2: bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: index(bytes.count + 1))
            case 3 where !bytes.isEmpty:
                let start = index(bytes.count)
                bytes.removeSubrange(start..<min(bytes.count, start + 1 + index(16)))
            case 4 where !bytes.isEmpty:
                let start = index(bytes.count), length = 1 + index(min(32, bytes.count - start))
                bytes.insert(contentsOf: bytes[start..<start + length], at: index(bytes.count + 1))
            default:
                let other = others[index(others.count)]
                guard !other.isEmpty else { continue }
                let start = index(other.count)
                bytes.replaceSubrange(index(bytes.count + 1)..<bytes.count, with: other[start...])
            }
        }
        return bytes
    }
}
