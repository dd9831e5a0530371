import CLibFuzzer
import Foundation
import FuzzTargets

/// The target this process fuzzes, from HONE_FUZZ_TARGET (`ops/fuzz` sets it).
let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["HONE_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("HONE_FUZZ_TARGET=\(name) is not a target (\(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return target
}()

/// One input, as libFuzzer calls it.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// The process's entry point (SwiftPM names it `honefuzz_main` and makes it `main`; the file is
/// compiled with -parse-as-library so no other exists): libFuzzer's driver with its flags.
@_cdecl("honefuzz_main")
func honefuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) }
}
