// swift-tools-version:6.1
// xdpwg: an AF_XDP WireGuard gateway. Dependencies point one way:
// WireGuard (pure protocol core) <- Engine (AF_XDP data plane) <- Gateway (control plane)
// <- xdpwg (CLI).
import PackageDescription

let package = Package(
    name: "xdpwg",
    products: [
        .executable(name: "xdpwg", targets: ["xdpwg"]),
        .library(name: "WireGuard", targets: ["WireGuard"]),
        // For the benchmark package (Benchmarks/), which times the per-packet pipeline
        // (Fixtures: the pipeline fixture it shares with `xdpwg bench-probe` and the fuzzers).
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "Fixtures", targets: ["Fixtures"]),
        // For the fuzzing package (Fuzz/): one libFuzzer executable per target.
        .library(name: "Fuzzing", targets: ["Fuzzing"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // LogHandler.log(event:) (SLG-0005) is the 1.16 handler API.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // System libraries, found through pkg-config (scripts/install-deps.sh installs them).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CLibXDP", pkgConfig: "libxdp", providers: [.apt(["libxdp-dev"])]),
        .systemLibrary(name: "CLibBPF", pkgConfig: "libbpf", providers: [.apt(["libbpf-dev"])]),
        .systemLibrary(name: "CNUMA", pkgConfig: "numa", providers: [.apt(["libnuma-dev"])]),
        // The transport AEAD's other backends (WireGuard/TransportCipher.swift): OpenSSL's EVP,
        // and Intel's ipsec-mb (no pkg-config file: its module map links IPSec_MB).
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CIPSecMB", providers: [.apt(["libipsec-mb-dev"])]),

        // Thin C shims for glibc functions Swift cannot import (declared only under _GNU_SOURCE).
        .target(name: "CXDPWG"),

        // The protocol core: no I/O, no clock, no threads, no locks. libsodium for everything
        // cryptographic; libcrypto and ipsec-mb only as transport AEAD backends.
        .target(
            name: "WireGuard",
            dependencies: ["CSodium", "CLibCrypto", "CIPSecMB"]
        ),
        // The AF_XDP data plane: BPF loading, UMEM, rings, sockets, workers, the per-packet pipeline.
        // Its XDP programs (bpf/*.bpf.c) are compiled by the EmbedBPFObjects plugin and embedded.
        .target(
            name: "Engine",
            dependencies: ["WireGuard", "CLibXDP", "CLibBPF", "CNUMA", "CXDPWG"],
            plugins: ["EmbedBPFObjects"]
        ),
        // Build-tool plugin: clang -target bpf for every *.bpf.c of a target's folder (bpf/ for
        // Engine, bpf/bench/ for Bench), objects embedded in that target.
        .plugin(name: "EmbedBPFObjects", capability: .buildTool()),
        // The control plane: configuration, tenants, handshakes, timers.
        .target(
            name: "Gateway",
            dependencies: ["WireGuard", "Engine", .product(name: "Logging", package: "swift-log")]
        ),
        // The single-machine lab (`xdpwg lab`): namespaces, wireguard-go peers, the gateway as a
        // child process, traffic. Shared by the perf lab and the integration tests.
        .target(
            name: "Lab",
            dependencies: ["WireGuard", "Engine", "Gateway", "CXDPWG"]
        ),
        // What the perf lab, the benchmarks and the fuzzers share, built on the protocol core
        // and the data plane only: the pipeline fixture (one tenant, one peer, frames) and its
        // checks.
        .target(
            name: "Fixtures",
            dependencies: ["WireGuard", "Engine", "CSodium"]
        ),
        // The perf lab (`xdpwg bench`): generator, sinks, devices under test, baselines, report.
        // Its own XDP programs (bpf/bench/*.bpf.c: the packet sink, the live-frame blaster) are
        // embedded here, not in the data plane.
        .target(
            name: "Bench",
            dependencies: ["Lab", "WireGuard", "Engine", "Gateway", "Fixtures", "CSodium", "CLibBPF", "CXDPWG"],
            plugins: ["EmbedBPFObjects"]
        ),
        // The fuzz targets as plain Swift (deterministic, no I/O): the Fuzz/ package wraps each
        // in a libFuzzer executable; FuzzingTests replays the corpora through them. Gateway for
        // the configuration and UAPI parsers; no lab, no perf lab.
        .target(
            name: "Fuzzing",
            dependencies: ["WireGuard", "Engine", "Gateway", "Fixtures"]
        ),
        .executableTarget(
            name: "xdpwg",
            dependencies: [
                "WireGuard", "Engine", "Gateway", "Lab", "Bench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Fixtures shared by the test targets: namespaces, external commands, the protocol core
        // as a UDP peer, inner packets, the two-tenant gateway, stats segments.
        .target(name: "TestSupport", dependencies: ["WireGuard", "Engine", "Lab", "CXDPWG"], path: "Tests/Support"),
        .testTarget(name: "WireGuardTests", dependencies: ["WireGuard", "CSodium"], exclude: ["Vectors"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "WireGuard", "CXDPWG", "CLibBPF", "TestSupport"]),
        .testTarget(
            name: "GatewayTests",
            dependencies: ["Gateway", "Engine", "WireGuard", "TestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "IntegrationTests", dependencies: ["WireGuard", "Gateway", "CXDPWG", "TestSupport"]),
        .testTarget(name: "FuzzingTests", dependencies: ["Fuzzing", "WireGuard"]),
        // The `xdpwg` commands as an operator runs them (the built binary), and the unit file.
        .testTarget(
            name: "CLITests",
            dependencies: ["Gateway", "Engine", "WireGuard", "TestSupport"]
        ),
        // The repository itself: ARCHITECTURE.md names only what exists.
        .testTarget(name: "RepositoryTests", dependencies: ["TestSupport"]),
        .testTarget(
            name: "BenchTests",
            dependencies: ["Bench", "Fixtures", "Lab", "Engine", "Gateway", "WireGuard", "TestSupport"]
        ),
    ]
)
