import Foundation
import Testing
import TestSupport

/// ARCHITECTURE.md is the map a maintainer reads first; these tests keep it true as code moves:
/// every file or folder it names exists, and every module in Sources is on the map.
@Suite struct ArchitectureDocumentTests {
    static let document = Repository.root.appendingPathComponent("ARCHITECTURE.md")

    /// The document's `code spans` that name a path in the repository: those starting with a
    /// top-level folder ("Sources/Engine/XDP/Umem.swift", "bpf/"), and bare file names
    /// ("Worker.swift"), which must exist somewhere under Sources, Tests or bpf.
    static func namedPaths(_ text: String) -> (paths: [String], fileNames: [String]) {
        let topLevel = ["Sources/", "Tests/", "bpf/", "Plugins/", "Benchmarks/", "Fuzz/", "scripts/", "contrib/", ".ci/"]
        var paths: [String] = [], fileNames: [String] = []
        for match in text.matches(of: /`([A-Za-z0-9_.\/+-]+)`/) {
            let span = String(match.1)
            if topLevel.contains(where: span.hasPrefix) || ["Package.swift", "README.md"].contains(span) {
                paths.append(span)
            } else if !span.contains("/"), [".swift", ".c", ".h"].contains(where: span.hasSuffix) {
                fileNames.append(span)
            }
        }
        return (paths, fileNames)
    }

    static func files(under folders: [String]) -> Set<String> {
        var names = Set<String>()
        for folder in folders {
            let root = Repository.root.appendingPathComponent(folder)
            for case let path as String in FileManager.default.enumerator(atPath: root.path) ?? .init() {
                names.insert((path as NSString).lastPathComponent)
            }
        }
        return names
    }

    @Test func everyFileItNamesExists() throws {
        let text = try String(contentsOf: Self.document, encoding: .utf8)
        let (paths, fileNames) = Self.namedPaths(text)
        #expect(paths.count > 20, "the document names hardly any file: \(paths)")
        for path in paths {
            #expect(FileManager.default.fileExists(atPath: Repository.root.appendingPathComponent(path).path),
                    "ARCHITECTURE.md names \(path), which does not exist")
        }
        let existing = Self.files(under: ["Sources", "Tests", "bpf"])
        for name in fileNames {
            #expect(existing.contains(name), "ARCHITECTURE.md names \(name), which is nowhere in Sources, Tests or bpf")
        }
    }

    @Test func everyModuleIsOnTheMap() throws {
        let text = try String(contentsOf: Self.document, encoding: .utf8)
        let sources = Repository.root.appendingPathComponent("Sources")
        let modules = try FileManager.default.contentsOfDirectory(atPath: sources.path).filter { !$0.hasPrefix(".") }
        #expect(modules.count >= 8)
        for module in modules {
            #expect(text.contains("`Sources/\(module)`") || text.contains("`Sources/\(module)/"),
                    "module \(module) is not in ARCHITECTURE.md")
        }
    }

    /// The check itself: a name that does not exist is caught.
    @Test func aMissingFileIsCaught() {
        let (paths, fileNames) = Self.namedPaths("see `Sources/Engine/Nope.swift`, `Gone.swift` and `x` or `--flag`")
        #expect(paths == ["Sources/Engine/Nope.swift"] && fileNames == ["Gone.swift"])
        #expect(!FileManager.default.fileExists(atPath: Repository.root.appendingPathComponent(paths[0]).path))
        #expect(!Self.files(under: ["Sources"]).contains("Gone.swift"))
    }
}
