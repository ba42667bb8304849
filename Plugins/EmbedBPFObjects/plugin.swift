// A build-tool plugin that compiles the XDP programs of a target with clang (-target bpf) and
// embeds them in it, as a generated Swift file holding each object in base64:
// `EmbeddedBPFObject.NAME` for FOLDER/NAME.bpf.c. A fresh clone plus `swift build` yields a
// binary that carries its XDP programs; there is no separate step and nothing to install.
//
// Each target that applies the plugin has its own folder of programs (`programFolders`): the
// gateway's in bpf/ for Engine, the perf lab's load programs in bpf/bench/ for Bench, so the
// data-plane module carries no program it does not run.
//
// Each program is one build command whose inputs are its source, every header in its folder
// and the script, so editing any of them rebuilds (SwiftPM commands have no depfiles:
// declaring all headers is the safe over-approximation). The work itself is done by
// embed-bpf-object.sh: a build command runs one executable and cannot redirect output, and the
// step is "compile, strip debug info, base64 into a Swift literal", which a shell says most
// plainly.
import Foundation
import PackagePlugin

@main
struct EmbedBPFObjects: BuildToolPlugin {
    /// Per target: the folder (from the package root) whose NAME.bpf.c it embeds, and the
    /// module that declares `EmbeddedBPFObject` if it is not the target itself.
    static let programFolders: [String: (folder: String, typeModule: String?)] = [
        "Engine": ("bpf", nil),
        "Bench": ("bpf/bench", "Engine"),
    ]

    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let programs = Self.programFolders[target.name] else {
            throw PluginError("EmbedBPFObjects: target \(target.name) has no folder of XDP programs "
                              + "(add it to programFolders in Plugins/EmbedBPFObjects/plugin.swift)")
        }
        let package = context.package.directoryURL
        let bpfDirectory = package.appending(path: programs.folder)
        let script = package.appending(path: "Plugins/EmbedBPFObjects/embed-bpf-object.sh")
        let files = try FileManager.default.contentsOfDirectory(
            at: bpfDirectory, includingPropertiesForKeys: nil
        ).sorted { $0.lastPathComponent < $1.lastPathComponent }
        let sources = files.filter { $0.lastPathComponent.hasSuffix(".bpf.c") }
        let headers = files.filter { $0.pathExtension == "h" }
        let clang = try findClang(context)

        return sources.map { source in
            let name = String(source.lastPathComponent.dropLast(".bpf.c".count))
            let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPF_\(name).swift")
            return .buildCommand(
                displayName: "Compiling XDP program \(programs.folder)/\(source.lastPathComponent)",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [script.path, clang.path, source.path, output.path, name, bpfDirectory.path,
                            programs.folder, programs.typeModule ?? ""],
                inputFiles: [source, script] + headers,
                outputFiles: [output]
            )
        }
    }

    /// The toolchain's clang (SwiftPM searches the toolchain's bin directory, then PATH);
    /// `BPF_CLANG` overrides it. Any clang with the BPF backend works.
    private func findClang(_ context: PluginContext) throws -> URL {
        if let override = ProcessInfo.processInfo.environment["BPF_CLANG"], !override.isEmpty {
            return URL(fileURLWithPath: override)
        }
        if let tool = try? context.tool(named: "clang") { return tool.url }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appending(path: "clang")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw PluginError("no clang found to compile the XDP programs in bpf/: install clang or set BPF_CLANG")
    }
}

struct PluginError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
