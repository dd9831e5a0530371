import Foundation
import Llama
import Tensor
import Tokenizer
import Training

/// `honebench profile`: where a prompt chunk (128 tokens), a decode step (one sequence, and
/// 4, 8 and 16 decoded together as at 4, 8 and 16 clients, and 16 with an adapter) and a LoRA training
/// step (the train benchmark's 8 × 256 tokens, rank 16, all seven targets) spend their time,
/// per op kind and per layer, with GFLOP/s and (decode) GB/s of weights read. One line per
/// phase and op, largest first, then one line per phase with the seconds of each layer;
/// a table on stderr. `HONE_PROFILE_PHASES` (e.g. `decode,decode16`) picks phases.
enum ProfileBench {
    static func run() throws {
        let wanted = ProcessInfo.processInfo.environment["HONE_PROFILE_PHASES"].map { Set($0.split(separator: ",").map(String.init)) }
        func phase(_ name: String, passes: Int, _ body: () throws -> Void) throws {
            if wanted?.contains(name) ?? true { try ProfileBench.phase(name, passes: passes, body) }
        }
        let (model, tokenizer, ids) = try EngineBench.load(promptTokens: 128)

        // Warm-up: first touch of the weights and buffers.
        _ = try model.forward([SequenceInput(tokens: ids, cache: model.makeCache(capacity: ids.count))])
        try phase("prefill", passes: 3) {
            _ = try model.forward([SequenceInput(tokens: ids, cache: model.makeCache(capacity: ids.count))])
        }
        let decodeSteps = 64
        let cache = model.makeCache(capacity: 16 + decodeSteps)
        _ = try model.forward([SequenceInput(tokens: Array(ids.prefix(16)), cache: cache)])
        var step = 0
        try phase("decode", passes: decodeSteps) {
            _ = try model.forward([SequenceInput(tokens: [ids[16 + step % 100]], cache: cache)])
            step += 1
        }
        // Serving steps at 4, 8 and 16 clients: sequences decoded together (the batched kernels);
        // then 16 clients of one adapter (rank 16 on all seven targets, as the learner makes; prepared for inference as served).
        let adapter = LoRAAdapter.initialized(config: LoRAConfig(), model: model.config, seed: 1).preparedForInference()
        for (clients, lora) in [(4, false), (8, false), (16, false), (16, true)] {
            let caches = (0..<clients).map { _ in model.makeCache(capacity: 16 + decodeSteps) }
            let used = lora ? adapter : nil
            for (i, c) in caches.enumerated() { _ = try model.forward([SequenceInput(tokens: Array(ids[i..<(i + 16)]), cache: c, adapter: used)]) }
            step = 0
            try phase("decode\(clients)\(lora ? "lora" : "")", passes: decodeSteps / 4) {
                _ = try model.forward(caches.enumerated().map {
                    SequenceInput(tokens: [ids[16 + ($0.offset + step) % 100]], cache: $0.element, adapter: used)
                })
                step += 1
            }
        }
        guard wanted?.contains("train") ?? true else { return }
        let batch = trainBenchTokens(tokenizer).map { TrainingSequence(tokens: $0, lossMask: Array(repeating: true, count: $0.count)) }
        let trainer = try LoRATrainer(model: model, adapter: .initialized(config: LoRAConfig(), model: model.config, seed: 1))
        try trainer.step(batch)
        try phase("train", passes: 2) { _ = try trainer.step(batch) }
    }

    /// Runs `body` `passes` times under a profile and reports per pass.
    static func phase(_ name: String, passes: Int, _ body: () throws -> Void) throws {
        let profile = OpProfile()
        let start = ContinuousClock.now
        try profile.record { for _ in 0..<passes { try body() } }
        report(name, profile, wall: (ContinuousClock.now - start) / .seconds(1) / Double(passes), passes: passes)
    }

    /// One line per op of `profile` (largest first) and one per phase with each layer's
    /// seconds, per pass of `wall` seconds; a table on stderr.
    static func report(_ name: String, _ profile: OpProfile, wall: Double, passes: Int) {
        let ops = profile.byOp
        let measured = ops.reduce(0) { $0 + $1.totals.seconds } / Double(passes)
        var table = String(format: "profile %@: %.4f s per pass, %.0f%% in measured ops\n", name, wall, 100 * measured / wall)
        for (op, t) in ops {
            let seconds = t.seconds / Double(passes)
            emit(["bench": "profile", "phase": name, "op": op, "s_per_pass": seconds, "share": seconds / wall,
                  "calls_per_pass": t.calls / passes, "gflop_s": t.gflops, "gb_s": t.gbps])
            table += "  " + op.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "%9.5f s %5.1f%% %7.1f GFLOP/s %5.1f GB/s\n", seconds, 100 * seconds / wall, t.gflops, t.gbps)
        }
        let layers = profile.byLayer
        emit(["bench": "profile-layers", "phase": name, "s_per_pass": wall,
              "outside_layers_s": (layers.first { $0.layer == nil }?.totals.seconds ?? 0) / Double(passes),
              "layer_s": layers.filter { $0.layer != nil }.map { ($0.totals.seconds / Double(passes) * 1e5).rounded() / 1e5 }])
        FileHandle.standardError.write(Data(table.utf8))
    }
}
