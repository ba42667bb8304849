import ArgumentParser
import Gateway

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Make a running gateway re-read its configuration file and apply what changed.",
        discussion: """
            Tenants and peers that were added, removed or changed are applied; everything \
            unchanged keeps running (sessions included). A file with problems changes nothing: \
            they are printed with their lines and the exit status is 1. SIGHUP does the same, \
            with the outcome in the gateway's log.
            """)

    @Option(name: .long, help: "The gateway's name ([Gateway] Name; default xdpwg).")
    var name = GatewaySection.defaultName

    @Option(name: .long, help: .hidden)
    var directory = ControlSocket.defaultDirectory

    func run() throws {
        var err = StandardError()
        let reply: (ok: Bool, lines: [String])
        do throws(GatewayError) {
            reply = try ControlSocket.request("reload", name: name, directory: directory)
        } catch {
            print("xdpwg reload: \(error)", to: &err)
            throw ExitCode.failure
        }
        guard reply.ok else {
            print("xdpwg reload: refused; the running configuration stays", to: &err)
            for line in reply.lines { print(line, to: &err) }
            throw ExitCode.failure
        }
        for line in reply.lines { print(line) }
    }
}
