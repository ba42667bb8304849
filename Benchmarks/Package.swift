// swift-tools-version:6.1
// xdpwg micro-benchmarks (ordo-one/benchmark). A package of its own, so that building and
// testing the main package never compiles the benchmark harness. Run from this directory:
//
//     swift package --allow-writing-to-package-directory benchmark [--filter REGEX]
//
// Benchmark executable targets live in Benchmarks/<Name>/ (the plugin looks for that
// parent directory name); see README.md.
import PackageDescription

/// The benchmark targets are built `-c release` by the plugin. Full cross-module
/// optimisation lets the harness inline across the boundary to the `WireGuard` module as
/// an application built in release mode would; nothing that changes safety checks.
let releaseLike: [SwiftSetting] = [
    .unsafeFlags(["-cross-module-optimization"]),
]

let package = Package(
    name: "xdpwg-benchmarks",
    dependencies: [
        // `name:` because a path dependency's identity is its directory name, which differs
        // between checkouts and worktrees; products below refer to it as "xdpwg".
        .package(name: "xdpwg", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Raw libsodium for baselines. Named apart from the main package's `CSodium`, whose
        // module would otherwise clash with this one in the same build.
        .systemLibrary(name: "BenchSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),

        // What every benchmark executable shares: libsodium set-up, metrics, sizes, defaults.
        .target(
            name: "BenchSupport",
            dependencies: [.product(name: "Benchmark", package: "benchmark"), "BenchSodium"],
            swiftSettings: releaseLike
        ),

        // Per-packet costs of the protocol core: AEAD (raw libsodium and the core's wrappers),
        // X25519, AllowedIPs lookups, and the harness's own baseline (noop).
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                "BenchSupport",
                .product(name: "WireGuard", package: "xdpwg"),
                "BenchSodium",
            ],
            path: "Benchmarks/CoreBenchmarks",
            swiftSettings: releaseLike,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The protocol layer: transport (`Keypair.seal`/`open`, in and out of place) and the
        // Noise handshake, each next to the raw libsodium work under it.
        .executableTarget(
            name: "ProtocolBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                "BenchSupport",
                .product(name: "WireGuard", package: "xdpwg"),
                "BenchSodium",
            ],
            path: "Benchmarks/ProtocolBenchmarks",
            swiftSettings: releaseLike,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The gateway's per-packet pipeline (Engine's PacketProcessor: decrypt and encrypt of
        // whole frames) next to the core Keypair.open/seal on the same bytes. The fixture (one
        // tenant, one peer, frames) comes from the main package's Fixtures, which `xdpwg
        // bench-probe` counts with callgrind: both measure the same thing.
        .executableTarget(
            name: "PipelineBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                "BenchSupport",
                .product(name: "Fixtures", package: "xdpwg"),
                .product(name: "Engine", package: "xdpwg"),
                .product(name: "WireGuard", package: "xdpwg"),
                "BenchSodium",
            ],
            path: "Benchmarks/PipelineBenchmarks",
            swiftSettings: releaseLike,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
