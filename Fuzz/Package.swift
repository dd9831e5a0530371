// swift-tools-version:6.0
// The fuzzers of `ops/fuzz`: one libFuzzer executable that runs a `FuzzTarget` of the main
// package (HONE_FUZZ_TARGET picks which). A package of its own because every module it
// links is compiled with -sanitize=fuzzer,address, in a build directory of its own.
import Foundation
import PackageDescription

// A path dependency is named after its directory: the checkout's, whatever it is called.
let hone = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "HoneFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "honefuzz", dependencies: ["CLibFuzzer", .product(name: "FuzzTargets", package: hone)]),
    ]
)
