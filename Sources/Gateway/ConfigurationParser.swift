import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

// The configuration file, in the style of wg-quick:
//
//     [Gateway]
//     Uplink = eth0                 # required: the NIC facing the peers
//     Queues = 0-1                  # optional: RX queues to serve (N, N-M, comma lists); default all
//     Cores = 2,3                   # optional: one per queue; default cores on the uplink's NUMA node
//     XDPMode = native              # optional: native (default) | generic
//     MetricsListen = 127.0.0.1:9586  # optional: serve Prometheus metrics at /metrics
//     Name = edge1                  # optional: this gateway's name (stats, reload); default xdpwg
//     MaxTenants = 256              # optional: room for tenants added while running
//     MaxPeers = 4096               # optional: room for peers added while running
//     Crypto = auto                 # optional: auto (default) | openssl | libsodium | ipsec-mb
//
//     [Tenant]                      # one or more
//     Name = acme                   # required, unique: the WireGuard interface name (`wg show acme`)
//     PrivateKey = <base64>         # required
//     ListenPort = 51820            # required, unique across tenants
//     Namespace = acme              # required: the tenant's network namespace; created if absent
//     Address = 10.10.0.1/24        # optional, repeatable, comma lists: the inner interface's addresses
//     InterfaceName = wg0           # optional: the inner interface's name; default Name
//
//     [Peer]                        # any number; belongs to the [Tenant] above it
//     PublicKey = <base64>          # required, unique in the tenant
//     PresharedKey = <base64>       # optional
//     AllowedIPs = 10.10.1.0/24, fd00:a::/64   # optional, repeatable, comma lists
//     Endpoint = 198.51.100.7:51820 # optional: IPv4:port or [IPv6]:port, no host names
//     PersistentKeepalive = 25      # optional: seconds, 0 or off
//
// As in wg-quick: `#` starts a comment to the end of the line; blank lines and whitespace
// around keys, values and list items do not matter; section names and keys are
// case-insensitive; list keys may repeat and accumulate.
//
// The parser collects every problem before it gives up, each with its line, and never
// copies a key's text into a String or a message: keys are decoded straight from the file's
// bytes, which the callers wipe.

extension GatewayConfiguration {
    /// Parses and validates configuration text. `fileName` only labels the problems.
    public static func parse(_ text: String, fileName: String) throws(ConfigurationError) -> GatewayConfiguration {
        var bytes = Array(text.utf8)
        defer { bytes.withUnsafeMutableBytes { wipe($0) } }
        return try bytes.withUnsafeBytes { ConfigurationParser.parse($0, fileName: fileName) }.get()
    }

    /// Parses and validates a file's bytes as read. Any bytes, invalid UTF-8 included, give a
    /// configuration or problems with their lines, never a crash. The caller wipes `bytes`,
    /// which may hold keys.
    public static func parse(bytes: UnsafeRawBufferPointer, fileName: String) throws(ConfigurationError) -> GatewayConfiguration {
        try ConfigurationParser.parse(bytes, fileName: fileName).get()
    }

    /// Reads, parses and validates the file at `path`. The file holds private keys, so it is
    /// refused, unread, when its group or others may read or write it (as `wg` warns).
    public static func load(path: String) throws(ConfigurationError) -> GatewayConfiguration {
        func failure(_ message: String) -> ConfigurationError {
            ConfigurationError(problems: [ConfigurationProblem(fileName: path, line: nil, message: message)])
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else { throw failure("cannot open: \(Errno.text(errno))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("cannot stat: \(Errno.text(errno))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw failure("not a regular file") }
        let mode = st.st_mode & 0o7777
        guard mode & 0o077 == 0 else {
            let octal = String(mode, radix: 8)
            throw failure("mode \(String(repeating: "0", count: max(0, 4 - octal.count)) + octal) lets group or "
                + "others read or write this file, which holds private keys: run `chmod 600 \(path)`")
        }
        // A [Peer] section takes about 110 bytes: 64 MiB holds half a million peers (100,000
        // take 11 MB), and anything larger is not a configuration file.
        let limit = 64 << 20
        guard st.st_size <= limit else { throw failure("larger than 64 MiB: not a configuration file") }

        // One more byte than the file's size, to notice a file that grew meanwhile.
        let capacity = Int(st.st_size) + 1
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer { wipe(buffer); buffer.deallocate() }
        var length = 0
        while length < capacity {
            let n = SystemCall.retryingEINTR { read(fd, buffer.baseAddress! + length, capacity - length) }
            if n > 0 { length += n } else if n == 0 { break } else {
                throw failure("cannot read: \(Errno.text(errno))")
            }
        }
        guard length < capacity else { throw failure("the file changed while it was read") }
        return try parse(bytes: UnsafeRawBufferPointer(rebasing: buffer[..<length]), fileName: path)
    }
}

enum ConfigurationParser {
    /// Collects problems; sorts them by line at the end.
    struct ProblemList {
        let fileName: String
        private(set) var problems: [ConfigurationProblem] = []

        mutating func add(_ line: Int?, _ message: String) {
            problems.append(ConfigurationProblem(fileName: fileName, line: line, message: message))
        }

        /// By line, whole-file problems last; in the order found within a line.
        var sorted: [ConfigurationProblem] {
            problems.enumerated().sorted { a, b in
                let la = a.element.line ?? .max, lb = b.element.line ?? .max
                return la != lb ? la < lb : a.offset < b.offset
            }.map(\.element)
        }
    }

    /// A value's bytes inside the file buffer.
    struct Value {
        let bytes: UnsafeRawBufferPointer
        var isEmpty: Bool { bytes.isEmpty }
        /// Only for values that are not secrets.
        var string: String { String(decoding: bytes, as: UTF8.self) }
    }

    enum Section: String, CaseIterable {
        case gateway = "Gateway", tenant = "Tenant", peer = "Peer"
    }

    /// Every key of every section, as spelled in messages. Matching is case-insensitive.
    enum Key: String, CaseIterable {
        case uplink = "Uplink", queues = "Queues", cores = "Cores", xdpMode = "XDPMode"
        case metricsListen = "MetricsListen", maxTenants = "MaxTenants", maxPeers = "MaxPeers", crypto = "Crypto"
        case name = "Name", privateKey = "PrivateKey", listenPort = "ListenPort", namespace = "Namespace"
        case address = "Address", interfaceName = "InterfaceName"
        case publicKey = "PublicKey", presharedKey = "PresharedKey", allowedIPs = "AllowedIPs"
        case endpoint = "Endpoint", persistentKeepalive = "PersistentKeepalive"

        var section: Section {
            switch self {
            case .uplink, .queues, .cores, .xdpMode, .metricsListen, .maxTenants, .maxPeers, .crypto: .gateway
            case .name, .privateKey, .listenPort, .namespace, .address, .interfaceName: .tenant
            case .publicKey, .presharedKey, .allowedIPs, .endpoint, .persistentKeepalive: .peer
            }
        }

        /// Keys that may repeat, their values accumulating (as in wg-quick).
        var isList: Bool { self == .address || self == .allowedIPs }
    }

    struct GatewayDraft {
        let line: Int
        var seen: [Key: Int] = [:]
        var uplink: String?
        var queues: [UInt32]?
        var cores: [Int]?
        var xdpMode = XDPModeSetting.native
        var metricsListen: Endpoint?
        var name: String?
        var maxTenants: Int?
        var maxPeers: Int?
        var crypto = CryptoSetting.auto
    }

    struct TenantDraft {
        let line: Int
        var seen: [Key: Int] = [:]
        var name: String?
        var privateKey: PrivateKey?
        var listenPort: UInt16?
        var namespace: String?
        var addresses: [IPPrefix] = []
        var interfaceName: String?
        var peers: [PeerDraft] = []
    }

    struct PeerDraft {
        let line: Int
        var seen: [Key: Int] = [:]
        var publicKey: PublicKey?
        var presharedKey: PresharedKey?
        /// Each prefix (host bits cleared) with the line that gave it.
        var allowedIPs: [(prefix: IPPrefix, line: Int)] = []
        var endpoint: Endpoint?
        var persistentKeepalive: UInt16 = 0
    }

    /// Where keys go: a section being filled, or nowhere (before the first section, or in a
    /// section already reported as wrong).
    enum Target {
        case none, ignored, gateway, tenant, peer, orphanPeer
    }

    static func parse(_ text: UnsafeRawBufferPointer, fileName: String) -> Result<GatewayConfiguration, ConfigurationError> {
        var problems = ProblemList(fileName: fileName)
        var gateway: GatewayDraft?
        var tenants: [TenantDraft] = []
        var orphan = PeerDraft(line: 0)          // a [Peer] before any [Tenant]: checked, then dropped
        var target = Target.none
        var lineCount = 0

        var lineStart = 0
        while lineStart < text.count {
            var lineEnd = lineStart
            while lineEnd < text.count && text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            lineCount += 1
            let n = lineCount
            defer { lineStart = lineEnd + 1 }

            // The comment goes first, then the whitespace around what is left.
            var end = lineStart
            while end < lineEnd && text[end] != UInt8(ascii: "#") { end += 1 }
            let line = trim(UnsafeRawBufferPointer(rebasing: text[lineStart..<end]))
            if line.isEmpty { continue }

            if line[0] == UInt8(ascii: "[") {
                guard line[line.count - 1] == UInt8(ascii: "]") else {
                    problems.add(n, "malformed section header: expected [Gateway], [Tenant] or [Peer]")
                    target = .ignored
                    continue
                }
                let name = trim(UnsafeRawBufferPointer(rebasing: line[1..<(line.count - 1)]))
                switch Section.allCases.first(where: { equalsIgnoringCase(name, $0.rawValue) }) {
                case .gateway:
                    if let first = gateway {
                        problems.add(n, "a second [Gateway] section (the first is at line \(first.line)): "
                                     + "there is one uplink")
                        target = .ignored
                    } else {
                        gateway = GatewayDraft(line: n)
                        target = .gateway
                    }
                case .tenant:
                    tenants.append(TenantDraft(line: n))
                    target = .tenant
                case .peer:
                    if tenants.isEmpty {
                        problems.add(n, "[Peer] before any [Tenant]: a peer belongs to the [Tenant] above it")
                        orphan = PeerDraft(line: n)
                        target = .orphanPeer
                    } else {
                        tenants[tenants.count - 1].peers.append(PeerDraft(line: n))
                        target = .peer
                    }
                case nil:
                    problems.add(n, "unknown section \(shownName(name, bracketed: true)): expected [Gateway], [Tenant] or [Peer]")
                    target = .ignored
                }
                continue
            }

            guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else {
                problems.add(n, "expected `Key = Value` or a [Section] header")
                continue
            }
            let keyText = trim(UnsafeRawBufferPointer(rebasing: line[..<equals]))
            let value = Value(bytes: trim(UnsafeRawBufferPointer(rebasing: line[(equals + 1)...])))
            if keyText.isEmpty {
                problems.add(n, "expected `Key = Value`: the key is missing")
                continue
            }
            let key = Key.allCases.first { equalsIgnoringCase(keyText, $0.rawValue) }

            let section: Section
            switch target {
            case .ignored: continue
            case .none:
                problems.add(n, "\(key.map { $0.rawValue } ?? "key \(shownName(keyText))") is outside a section: "
                             + "keys belong under [Gateway], [Tenant] or [Peer]")
                continue
            case .gateway: section = .gateway
            case .tenant: section = .tenant
            case .peer, .orphanPeer: section = .peer
            }
            guard let key else {
                problems.add(n, "unknown key \(shownName(keyText)) in [\(section.rawValue)]")
                continue
            }
            // `Name` names a tenant, and also the gateway itself.
            guard key.section == section || (key == .name && section == .gateway) else {
                problems.add(n, "\(key.rawValue) belongs in [\(key.section.rawValue)], not in [\(section.rawValue)]")
                continue
            }

            switch target {
            case .gateway: gatewayKey(key, value, n, &gateway!, &problems)
            case .tenant: tenantKey(key, value, n, &tenants[tenants.count - 1], &problems)
            case .peer:
                let t = tenants.count - 1
                peerKey(key, value, n, &tenants[t].peers[tenants[t].peers.count - 1], &problems)
            case .orphanPeer: peerKey(key, value, n, &orphan, &problems)
            case .none, .ignored: break
            }
        }

        let configuration = validate(gateway, tenants, &problems)
        if let configuration, problems.problems.isEmpty { return .success(configuration) }
        return .failure(ConfigurationError(problems: problems.sorted))
    }

    // MARK: Keys

    /// Records the key as given at line `n`; false (and a problem) for a second value of a
    /// single-valued key.
    static func firstTime(_ key: Key, _ n: Int, _ seen: inout [Key: Int], _ problems: inout ProblemList) -> Bool {
        if let first = seen[key], !key.isList {
            problems.add(n, "\(key.rawValue) is given twice (first at line \(first))")
            return false
        }
        if seen[key] == nil { seen[key] = n }
        return true
    }

    static func gatewayKey(_ key: Key, _ value: Value, _ n: Int, _ d: inout GatewayDraft, _ problems: inout ProblemList) {
        guard firstTime(key, n, &d.seen, &problems) else { return }
        switch key {
        case .uplink:
            if let problem = interfaceNameProblem(value) { problems.add(n, "Uplink: \(problem)") } else { d.uplink = value.string }
        case .queues:
            d.queues = numberList(value, key: key, noun: "queue", max: 65535, n, &problems).map { $0.map { UInt32($0) } }
        case .cores:
            d.cores = numberList(value, key: key, noun: "core", max: 65535, n, &problems)
        case .xdpMode:
            if let mode = XDPModeSetting.allCases.first(where: { equalsIgnoringCase(value.bytes, $0.rawValue) }) {
                d.xdpMode = mode
            } else {
                problems.add(n, "XDPMode: \(shown(value)) is not native or generic")
            }
        case .metricsListen:
            d.metricsListen = endpoint(value, key: key, n, &problems)
        case .name:
            if let problem = gatewayNameProblem(value) { problems.add(n, "Name: \(problem)") } else { d.name = value.string }
        case .maxTenants:
            if let v = decimal(value.bytes, max: GatewaySection.tenantLimit), v >= 1 {
                d.maxTenants = v
            } else {
                problems.add(n, "MaxTenants: \(shown(value)) is not a number from 1 to \(GatewaySection.tenantLimit)")
            }
        case .maxPeers:
            if let v = decimal(value.bytes, max: GatewaySection.peerLimit), v >= 1 {
                d.maxPeers = v
            } else {
                problems.add(n, "MaxPeers: \(shown(value)) is not a number from 1 to \(GatewaySection.peerLimit)")
            }
        case .crypto:
            if let setting = CryptoSetting.allCases.first(where: { equalsIgnoringCase(value.bytes, $0.name) }) {
                d.crypto = setting
            } else {
                problems.add(n, "Crypto: \(shown(value)) is not auto, openssl, libsodium or ipsec-mb")
            }
        default:
            break
        }
    }

    static func tenantKey(_ key: Key, _ value: Value, _ n: Int, _ d: inout TenantDraft, _ problems: inout ProblemList) {
        guard firstTime(key, n, &d.seen, &problems) else { return }
        switch key {
        case .name:
            if let problem = interfaceNameProblem(value) { problems.add(n, "Name: \(problem)") } else { d.name = value.string }
        case .interfaceName:
            if let problem = interfaceNameProblem(value) {
                problems.add(n, "InterfaceName: \(problem)")
            } else {
                d.interfaceName = value.string
            }
        case .privateKey:
            if var raw = Key32(base64Bytes: value.bytes) {
                d.privateKey = PrivateKey(consuming: &raw)
            } else {
                problems.add(n, "PrivateKey: not a base64 WireGuard key (44 characters)")
            }
        case .listenPort:
            if let port = decimal(value.bytes, max: 65535), port >= 1 {
                d.listenPort = UInt16(port)
            } else {
                problems.add(n, "ListenPort: \(shown(value)) is not a port number from 1 to 65535")
            }
        case .namespace:
            if let problem = namespaceNameProblem(value) { problems.add(n, "Namespace: \(problem)") } else { d.namespace = value.string }
        case .address:
            for item in listItems(value, key: key, n, &problems) {
                guard let prefix = try? IPPrefix(parsing: item.string) else {
                    problems.add(n, "Address: \(shownAddress(item)) is not an IP address with an optional /prefix length")
                    continue
                }
                if d.addresses.contains(prefix) {
                    problems.add(n, "Address: \(prefix) is given twice")
                } else {
                    d.addresses.append(prefix)     // as written: the interface needs its host part
                }
            }
        default:
            break
        }
    }

    static func peerKey(_ key: Key, _ value: Value, _ n: Int, _ d: inout PeerDraft, _ problems: inout ProblemList) {
        guard firstTime(key, n, &d.seen, &problems) else { return }
        switch key {
        case .publicKey:
            if let raw = Key32(base64Bytes: value.bytes) {
                d.publicKey = PublicKey(raw)
            } else {
                problems.add(n, "PublicKey: not a base64 WireGuard key (44 characters)")
            }
        case .presharedKey:
            if var raw = Key32(base64Bytes: value.bytes) {
                d.presharedKey = PresharedKey(consuming: &raw)
            } else {
                problems.add(n, "PresharedKey: not a base64 WireGuard key (44 characters)")
            }
        case .allowedIPs:
            for item in listItems(value, key: key, n, &problems) {
                guard let prefix = try? IPPrefix(parsing: item.string) else {
                    problems.add(n, "AllowedIPs: \(shownAddress(item)) is not an IP prefix (ADDRESS/LENGTH or an address)")
                    continue
                }
                // Host bits are cleared, as wg does ("10.0.0.1/24" allows 10.0.0.0/24); the same
                // prefix twice in one peer is the same thing said twice.
                let masked = prefix.masked
                if !d.allowedIPs.contains(where: { $0.prefix == masked }) { d.allowedIPs.append((masked, n)) }
            }
        case .endpoint:
            d.endpoint = endpoint(value, key: key, n, &problems)
        case .persistentKeepalive:
            if equalsIgnoringCase(value.bytes, "off") {
                d.persistentKeepalive = 0
            } else if let seconds = decimal(value.bytes, max: 65535) {
                d.persistentKeepalive = UInt16(seconds)
            } else {
                problems.add(n, "PersistentKeepalive: \(shown(value)) is not a number of seconds from 0 to 65535, or off")
            }
        default:
            break
        }
    }

    // MARK: Whole-file checks

    /// The checks that need the whole file; returns the configuration when every part of it
    /// parsed (the caller still refuses it when any problem was found).
    static func validate(_ gateway: GatewayDraft?, _ tenants: [TenantDraft],
                         _ problems: inout ProblemList) -> GatewayConfiguration? {
        var section: GatewaySection?
        if let g = gateway {
            if g.seen[.uplink] == nil { problems.add(g.line, "[Gateway] is missing Uplink (the NIC facing the peers)") }
            if let queues = g.queues, let cores = g.cores, queues.count != cores.count {
                problems.add(g.seen[.cores], "Cores: \(cores.count) \(plural(cores.count, "core")) for "
                             + "\(queues.count) \(plural(queues.count, "queue")): give one core per queue")
            }
            if let uplink = g.uplink {
                section = GatewaySection(uplink: uplink, queues: g.queues, cores: g.cores, xdpMode: g.xdpMode,
                                         metricsListen: g.metricsListen, name: g.name ?? GatewaySection.defaultName,
                                         maxTenants: g.maxTenants, maxPeers: g.maxPeers, crypto: g.crypto,
                                         line: g.line)
            }
        } else {
            problems.add(nil, "no [Gateway] section: the file needs one, with the Uplink")
        }
        if tenants.isEmpty { problems.add(nil, "no [Tenant] section: at least one tenant is required") }

        var nameLines: [String: Int] = [:]
        var portOwners: [UInt16: (name: String, line: Int)] = [:]
        var interfaceLines: [String: Int] = [:]          // "namespace/interface" -> tenant line
        var built: [TenantConfiguration] = []
        var complete = true
        for t in tenants {
            for key in [Key.name, .privateKey, .listenPort, .namespace] where t.seen[key] == nil {
                problems.add(t.line, "[Tenant] is missing \(key.rawValue)")
            }
            let label = t.name.map { "tenant '\($0)'" } ?? "the [Tenant] at line \(t.line)"
            if let name = t.name {
                if let first = nameLines[name] {
                    problems.add(t.seen[.name], "Name: '\(name)' is already the name of the [Tenant] at line \(first) "
                                 + "(names must be unique: they name the WireGuard interfaces)")
                } else {
                    nameLines[name] = t.line
                }
            }
            if let port = t.listenPort {
                if let owner = portOwners[port] {
                    problems.add(t.seen[.listenPort], "ListenPort: \(port) is already used by \(owner.name) (line \(owner.line))")
                } else {
                    portOwners[port] = (label, t.seen[.listenPort] ?? t.line)
                }
            }
            if let namespace = t.namespace, let interface = t.interfaceName ?? t.name {
                let place = namespace + "/" + interface
                if let first = interfaceLines[place] {
                    problems.add(t.seen[.interfaceName] ?? t.seen[.name] ?? t.line,
                                 "InterfaceName: '\(interface)' in namespace '\(namespace)' is already used by "
                                 + "the [Tenant] at line \(first)")
                } else {
                    interfaceLines[place] = t.line
                }
            }

            var peerLines: [PublicKey: Int] = [:]
            var prefixOwners: [IPPrefix: Int] = [:]   // prefix -> [Peer] line
            var peers: [PeerConfiguration] = []
            for p in t.peers {
                if p.seen[.publicKey] == nil { problems.add(p.line, "[Peer] is missing PublicKey") }
                if let key = p.publicKey {
                    if let first = peerLines[key] {
                        problems.add(p.seen[.publicKey], "PublicKey: the same key as the [Peer] at line \(first) of this tenant")
                    } else {
                        peerLines[key] = p.line
                    }
                    if let own = t.privateKey?.publicKey, own == key {
                        problems.add(p.seen[.publicKey], "PublicKey: this is the tenant's own public key (of its PrivateKey)")
                    }
                }
                for (prefix, line) in p.allowedIPs {
                    if let owner = prefixOwners[prefix] {
                        problems.add(line, "AllowedIPs: \(prefix) is already allowed for the [Peer] at line \(owner); "
                                     + "a prefix routes to one peer")
                    } else {
                        prefixOwners[prefix] = p.line
                    }
                }
                if let key = p.publicKey {
                    peers.append(PeerConfiguration(publicKey: key, presharedKey: p.presharedKey,
                                                   allowedIPs: p.allowedIPs.map(\.prefix), endpoint: p.endpoint,
                                                   persistentKeepalive: p.persistentKeepalive, line: p.line))
                } else {
                    complete = false
                }
            }
            if let name = t.name, let key = t.privateKey, let port = t.listenPort, let namespace = t.namespace {
                built.append(TenantConfiguration(name: name, privateKey: key, listenPort: port, namespace: namespace,
                                                 addresses: t.addresses, interfaceName: t.interfaceName, peers: peers,
                                                 line: t.line))
            } else {
                complete = false
            }
        }
        if let g = gateway {
            let peerCount = tenants.reduce(0) { $0 + $1.peers.count }
            if let max = g.maxTenants, max < tenants.count {
                problems.add(g.seen[.maxTenants], "MaxTenants: \(max) is fewer than the \(tenants.count) tenants in this file")
            }
            if let max = g.maxPeers, max < peerCount {
                problems.add(g.seen[.maxPeers], "MaxPeers: \(max) is fewer than the \(peerCount) peers in this file")
            }
        }
        guard let section, complete, !built.isEmpty else { return nil }
        return GatewayConfiguration(gateway: section, tenants: built)
    }
}
