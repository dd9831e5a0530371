// swift-tools-version:6.0
// Hone — a continual-learning daemon. The module table and the direction of the
// arrows are in ../shared/DESIGN.md ("Components"); leaves come first here.
import PackageDescription

/// The numeric modules are optimized even in debug builds (as llm.c always builds -O3):
/// unoptimized Swift loops make the engine 10–50× slower, which would turn the real-model
/// tests into many minutes. Everything else stays -Onone for debugging.
let numeric: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]
/// The C kernels likewise (SwiftPM compiles C at -O0 in debug builds: decode was ~6× slower).
let numericC: [CSetting] = [.unsafeFlags(["-O2"], .when(configuration: .debug))]

let package = Package(
    name: "Hone",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "honed", targets: ["honed"]),
        .executable(name: "honectl", targets: ["honectl"]),
        // The parsers under fuzzing, for the `Fuzz/` package (`ops/fuzz`).
        .library(name: "FuzzTargets", targets: ["FuzzTargets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"4.0.0"),
    ],
    targets: [
        // Leaves: no project dependencies.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "JSON"),
        // Runs the built executables as a user does (tests and benchmarks).
        .target(name: "BuiltTools"),
        .target(name: "CKernels", cSettings: numericC),
        .target(name: "Hashing", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "GGUF", dependencies: ["CKernels", "Hashing"]),
        .target(name: "Tokenizer", dependencies: ["GGUF"], swiftSettings: numeric),
        .target(name: "Tensor", dependencies: ["CKernels", "CBLAS"], swiftSettings: numeric),
        .target(name: "Llama", dependencies: ["GGUF", "CKernels", "Tensor"], swiftSettings: numeric),
        .target(name: "Generation", dependencies: ["Llama", "Tokenizer", "Tensor", "CKernels"], swiftSettings: numeric),
        .target(name: "Training", dependencies: ["Llama", "Tensor", "Tokenizer", "GGUF", "JSON", "CKernels", "Hashing"],
                swiftSettings: numeric),
        .target(name: "Learning", dependencies: ["Generation", "Training", "Llama", "Tokenizer", "Tensor", "JSON"], swiftSettings: numeric),
        .target(
            name: "EmbeddedPostgres",
            dependencies: [.product(name: "Logging", package: "swift-log")]
        ),
        // Database access and the queue built on it.
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "Queue",
            dependencies: [
                "Postgres", "JSON",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Registry",
            dependencies: ["Postgres", "JSON"]
        ),
        .target(
            name: "Server",
            dependencies: [
                "Generation", "Tokenizer", "Llama", "JSON", "Tensor", "Hashing", "CKernels",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Every parser of outside input as a function of bytes (fuzzing and its regressions).
        .target(name: "FuzzTargets", dependencies: ["GGUF", "JSON", "Learning", "Llama", "Queue", "Server", "Tokenizer", "Training"]),
        // Wiring and executables.
        .target(
            name: "HoneDaemon",
            dependencies: [
                "Postgres", "EmbeddedPostgres", "Queue", "JSON", "Server", "Generation", "Llama", "Tokenizer", "Training",
                "Learning", "Registry", "Tensor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "honed",
            dependencies: [
                "HoneDaemon", "Llama", "Server", "Tensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "honectl",
            dependencies: [
                "HoneDaemon", "Postgres", "Queue", "GGUF", "Tokenizer", "Llama", "Generation", "JSON", "Training", "Tensor",
                "Learning", "Registry", "Server",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "honebench",
            dependencies: [
                "HoneDaemon", "Postgres", "EmbeddedPostgres", "Queue", "JSON", "GGUF", "Llama", "Tokenizer", "Tensor", "Training", "Server", "Generation",
                "Learning", "Registry", "BuiltTools",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "UnitTests", dependencies: ["JSON", "Postgres", "Queue", "CKernels", "GGUF", "Tokenizer", "Llama", "Generation", "Tensor", "Learning", "FuzzTargets"]),
        .testTarget(
            name: "ModelTests",
            dependencies: [
                "BuiltTools",
                "GGUF", "Tokenizer", "Llama", "Generation", "CKernels", "JSON", "Server", "Tensor", "Training",
                "HoneDaemon", "Postgres", "Learning", "Registry", "Queue", "Hashing",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "BuiltTools",
                "Postgres", "EmbeddedPostgres", "Queue", "HoneDaemon", "JSON", "Server", "Tokenizer", "Registry", "Training", "Hashing",
                "Generation", "Llama",
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Snapshots"]
        ),
    ]
)
