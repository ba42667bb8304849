// swift-tools-version:6.1
// xdpwg's libFuzzer executables: one per fuzz target of the main package's `Fuzzing` library
// (Sources/Fuzzing), whose only file defines LLVMFuzzerTestOneInput. A package of its own,
// like Benchmarks/, so that the main build never links libFuzzer. Build and run through
// scripts/fuzz.sh, or by hand from this directory:
//
//     swift build -c release --sanitize fuzzer --sanitize address
//     .build/release/FuzzMessages Corpus/messages
//
// Each executable's single file is not main.swift, so it is compiled as a library
// (-parse-as-library): libFuzzer's main() runs it.
import PackageDescription

/// The fuzz targets, as `FuzzTarget`'s raw values; executable FuzzX for target x.
let targets = [
    "messages", "handshakeInitiation", "handshakeResponse", "handshakeCookie", "transportOpen",
    "innerPacket", "uplinkFrame", "configuration", "uapi",
]

func executableName(_ target: String) -> String { "Fuzz" + target.prefix(1).uppercased() + target.dropFirst() }

let package = Package(
    name: "xdpwg-fuzz",
    dependencies: [
        // `name:` because a path dependency's identity is its directory name, which differs
        // between checkouts and worktrees.
        .package(name: "xdpwg", path: ".."),
    ],
    targets: targets.map { target in
        .executableTarget(
            name: executableName(target),
            dependencies: [.product(name: "Fuzzing", package: "xdpwg")],
            path: "Sources/\(executableName(target))"
        )
    }
)
