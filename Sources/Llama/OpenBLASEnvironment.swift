import Foundation

/// Debian's OpenBLAS 0.3.21 misdetects Sapphire Rapids as "Prescott" and runs sgemm ~5×
/// slower (NOTES.md); `OPENBLAS_CORETYPE` fixes it but is read only when the library
/// loads. Executables call this first: when the variable is unset it is set and the
/// process re-executes itself, so every start gets the fast kernels.
public enum OpenBLASEnvironment {
    public static func ensureCoreType() {
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv("HONE_NO_REEXEC") == nil else { return }
        guard cpuHasAVX512() else { return }
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
        setenv("HONE_NO_REEXEC", "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // execv returned: keep running with the slower kernels.
    }

    static func cpuHasAVX512() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return info.contains(" avx512f ") || info.contains(" avx512f\n")
    }
}
