import Foundation
import Testing
import TestSupport

/// The product never reaches the perf lab's crypto-off mode: `Gateway.transportCrypto` is
/// visible only to `@_spi(PerfLab) import Gateway`, and only the perf lab may write that.
@Suite struct PerfLabBoundaryTests {
    /// The Swift files under `folder` with a line that starts with `prefix`, relative to the
    /// repository.
    static func files(under folder: String, withALineStarting prefix: String) -> [String] {
        let root = Repository.root.appendingPathComponent(folder)
        var found: [String] = []
        for case let path as String in FileManager.default.enumerator(atPath: root.path) ?? .init()
        where path.hasSuffix(".swift") {
            let text = (try? String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)) ?? ""
            if text.split(separator: "\n").contains(where: { $0.hasPrefix(prefix) }) { found.append("\(folder)/\(path)") }
        }
        return found.sorted()
    }

    @Test func onlyThePerfLabImportsThePerfLabInterface() {
        let importers = Self.files(under: "Sources", withALineStarting: "@_spi(PerfLab) import")
        #expect(!importers.isEmpty, "the perf lab no longer imports its interface: is this test still needed?")
        for file in importers {
            #expect(file.hasPrefix("Sources/Bench/"), "\(file) imports the perf lab's interface to the gateway")
        }
    }
}
