import CKernels
import Foundation

/// The SIMD level of Hone's C kernels. The CPU decides the highest; `HONE_KERNELS`
/// (`reference`, `avx2`, `avx512`) picks a lower one for tests and benchmarks.
public enum KernelLevel: Int32, CaseIterable, Comparable, Sendable, CustomStringConvertible {
    /// Portable C: any CPU.
    case reference = 0
    /// AVX2 + FMA + F16C (AMD EPYC of this kind, Intel since Haswell).
    case avx2 = 1
    /// AVX-512 F/BW/VL with VNNI (Intel Sapphire Rapids of this kind).
    case avx512 = 2

    /// The highest level this CPU runs.
    public static var cpu: KernelLevel { KernelLevel(rawValue: hone_cpu_level()) ?? .reference }
    /// The level in use (the first call reads `HONE_KERNELS`; a level the CPU lacks stops
    /// the process with the reason).
    public static var active: KernelLevel { KernelLevel(rawValue: hone_kernels_level()) ?? .reference }

    /// Whether this level's int16 row kernels take many vectors at once (AVX-512: sixteen
    /// per lane group), so that prompt rows go through them, per row and batch-invariant,
    /// instead of a GEMM over dequantized weights.
    public var batchesRows: Bool { self == .avx512 }

    /// The name `HONE_KERNELS` uses.
    public var description: String { String(cString: hone_kernels_level_name(rawValue)) }

    public static func < (a: KernelLevel, b: KernelLevel) -> Bool { a.rawValue < b.rawValue }

    /// Runs `body` with this level in use, then restores the previous one (tests hold every
    /// level the CPU runs to the same reference).
    public func use<T>(_ body: () throws -> T) rethrows -> T {
        let previous = hone_kernels_use(rawValue)
        precondition(previous >= 0, "kernel level \(self) is above this CPU's \(KernelLevel.cpu)")
        defer { hone_kernels_use(previous) }
        return try body()
    }
}

/// What the process computes on: the CPU, the kernel level, and OpenBLAS's core type.
/// The one place that decides `OPENBLAS_CORETYPE`; scripts never set it.
///
/// Debian's OpenBLAS 0.3.21 misdetects Sapphire Rapids as "Prescott" and runs sgemm ~5×
/// slower, while a core type the CPU cannot execute (SkylakeX on an AVX2-only AMD EPYC)
/// dies with SIGILL at the first sgemm (NOTES.md). The library reads the variable when it
/// loads, so an executable calls `prepareProcess()` first: it sets the core type that
/// matches the kernel level in use and re-executes itself once.
public struct CPUEnvironment: Sendable {
    /// The CPU's model name (`/proc/cpuinfo`), e.g. "AMD EPYC 9R14".
    public let model: String
    /// The highest kernel level the CPU runs.
    public let cpuLevel: KernelLevel
    /// The kernel level in use.
    public let kernelLevel: KernelLevel
    /// OpenBLAS's core type: the value in the environment, or "auto" (its own detection).
    public let blasCoreType: String

    /// The running process's environment.
    public static var current: CPUEnvironment {
        CPUEnvironment(model: cpuModel(), cpuLevel: .cpu, kernelLevel: .active,
                       blasCoreType: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].flatMap { $0.isEmpty ? nil : $0 } ?? "auto")
    }

    /// The OpenBLAS core type for a kernel level: one whose instructions that level
    /// guarantees. Nil for the portable level: OpenBLAS's own detection never picks a core
    /// the CPU lacks.
    public static func blasCoreType(for level: KernelLevel) -> String? {
        switch level {
        case .avx512: "SkylakeX"
        case .avx2: "Haswell"
        case .reference: nil
        }
    }

    /// The core type the process should run OpenBLAS with: `HONE_BLAS_CORETYPE` when set
    /// (the user's choice), else the kernel level's (nil: leave OpenBLAS's own detection).
    public static func chosenBlasCoreType(level: KernelLevel, environment: [String: String]) -> String? {
        if let asked = environment["HONE_BLAS_CORETYPE"], !asked.isEmpty { return asked }
        return blasCoreType(for: level)
    }

    /// Sets the heap policy (`hone_configure_heap`: one arena, large buffers kept), then
    /// sets `OPENBLAS_CORETYPE` to `chosenBlasCoreType` and re-executes the process, unless
    /// it holds that value already or this process is the re-execution. A different value
    /// inherited from the environment is replaced, with a line on stderr: machine images
    /// of this project's kind export `OPENBLAS_CORETYPE=Haswell` for every process, which on
    /// an AVX-512 machine (AMD EPYC family 26) halved training's products (a train step
    /// 6.4–7.0 s against 4.0 s with SkylakeX, `honebench profile`). `HONE_BLAS_CORETYPE`
    /// picks another core type on purpose. Also reads `HONE_KERNELS`, so a level the CPU
    /// lacks stops the process here, at start, with the reason.
    public static func prepareProcess() {
        // As early as the process can: threads that start later share the one arena.
        hone_configure_heap()
        let level = KernelLevel.active
        let environment = ProcessInfo.processInfo.environment
        let inherited = environment["OPENBLAS_CORETYPE"] ?? ""
        guard (environment["HONE_NO_REEXEC"] ?? "").isEmpty,
              let coreType = chosenBlasCoreType(level: level, environment: environment), coreType != inherited else { return }
        if !inherited.isEmpty {
            FileHandle.standardError.write(Data("hone: OPENBLAS_CORETYPE=\(inherited) from the environment replaced by \(coreType), the core type of kernel level \(level) (HONE_BLAS_CORETYPE chooses one)\n".utf8))
        }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        setenv("HONE_NO_REEXEC", "1", 1)
        // The re-execution starts with one arena (glibc reads this before any thread runs;
        // the mallopt above comes after the runtime's first threads).
        setenv("MALLOC_ARENA_MAX", "1", 0)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // execv returned: keep running with OpenBLAS's own choice, which is slower but safe.
    }

    /// One line for logs and `--version`: "kernels avx512, BLAS SkylakeX, CPU Intel(R) Xeon(R) Processor".
    public var summary: String { "kernels \(kernelLevel), BLAS \(blasCoreType), CPU \(model)" }

    static func cpuModel() -> String {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        for line in info.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return "unknown"
    }
}
