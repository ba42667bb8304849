// Targets `configuration` and `uapi`: the two text formats an operator (or `wg`) hands the
// gateway. Both parsers read bytes, never a String, so invalid UTF-8 reaches them as is.

import Gateway
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

enum TextHarness {
    /// Configuration files are refused above 1 MiB; UAPI requests are bounded by the server.
    /// Inputs are cut here: more bytes only cost time.
    static let maxTextInput = 64 << 10

    // MARK: configuration

    /// The bytes as a configuration file. Invariants: problems carry the file's name and lines
    /// that exist; a valid configuration keeps the uniqueness the format promises (tenant
    /// names, listen ports, peer keys per tenant, a prefix to one peer); the String entry point
    /// agrees with the bytes one on valid UTF-8.
    static func runConfiguration(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let bytes = UnsafeRawBufferPointer(rebasing: input.prefix(maxTextInput))
        let fileName = "fuzz.conf"
        let lineCount = bytes.reduce(1) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
        let result: FuzzResult
        let outcome: Result<GatewayConfiguration, ConfigurationError>
        do throws(ConfigurationError) {
            outcome = .success(try GatewayConfiguration.parse(bytes: bytes, fileName: fileName))
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .success(let configuration):
            checkUnique(configuration)
            result = .accepted("\(configuration.tenants.count) tenants, \(configuration.peerCount) peers")
        case .failure(let error):
            guard !error.problems.isEmpty else { finding("a configuration error without problems") }
            for p in error.problems {
                guard p.fileName == fileName else { finding("a problem names file \(p.fileName)") }
                if let line = p.line, !(1...lineCount).contains(line) {
                    finding("a problem at line \(line) of a \(lineCount)-line file: \(p.message)")
                }
            }
            _ = error.description
            result = .rejected("\(error.problems.count) problems")
        }
        // The String entry point: same verdict on the same (valid UTF-8) text.
        if let text = String(validating: bytes, as: UTF8.self) {
            let viaString: FuzzResult
            do throws(ConfigurationError) {
                let c = try GatewayConfiguration.parse(text, fileName: fileName)
                viaString = .accepted("\(c.tenants.count) tenants, \(c.peerCount) peers")
            } catch {
                viaString = .rejected("\(error.problems.count) problems")
            }
            guard viaString == result else { finding("parse(bytes:) says \(result), parse(String) says \(viaString)") }
        }
        return result
    }

    private static func checkUnique(_ c: GatewayConfiguration) {
        var names = Set<String>(), ports = Set<UInt16>()
        for t in c.tenants {
            guard names.insert(t.name).inserted else { finding("two tenants named \(t.name)") }
            guard ports.insert(t.listenPort).inserted else { finding("two tenants on port \(t.listenPort)") }
            checkPeers(t.peers, own: t.privateKey.publicKey, what: "tenant \(t.name)")
        }
    }

    /// A tenant's peers: keys unique and not the tenant's own, every prefix masked and owned
    /// by one peer only (cryptokey routing).
    private static func checkPeers(_ peers: [PeerConfiguration], own: PublicKey, what: String) {
        var keys = Set<PublicKey>(), prefixes = Set<IPPrefix>()
        for p in peers {
            guard p.publicKey != own else { finding("\(what) has its own public key as a peer") }
            guard keys.insert(p.publicKey).inserted else { finding("\(what) has a peer twice") }
            for prefix in p.allowedIPs {
                guard prefix.isMasked else { finding("\(what) stores \(prefix) with host bits set") }
                guard prefixes.insert(prefix).inserted else { finding("\(what) gives \(prefix) to two peers") }
            }
        }
    }

    // MARK: UAPI

    /// The tenant UAPI requests are applied to: peer A with a preshared key and two prefixes,
    /// peer B with one.
    static let tenant = TenantConfiguration(
        name: "fuzz0", privateKey: FuzzKeys.responder, listenPort: 51820, namespace: "fuzz0",
        peers: [
            PeerConfiguration(publicKey: FuzzKeys.initiator.publicKey, presharedKey: FuzzKeys.presharedKey(),
                              allowedIPs: [IPPrefix("10.10.1.0/24")!, IPPrefix("fd00:a::/64")!],
                              endpoint: Endpoint(address: IPAddress("192.0.2.1")!, port: 40000), line: 0),
            PeerConfiguration(publicKey: FuzzKeys.otherPeer.publicKey, allowedIPs: [IPPrefix("10.10.2.0/24")!],
                              persistentKeepalive: 25, line: 0),
        ],
        line: 1)

    /// The bytes as one UAPI request. Invariants: a get renders a reply ending `errno=0`; an
    /// applied set keeps the tenant's peers unique and its prefixes owned once; every refusal
    /// renders a reply with a non-zero errno.
    static func runUAPI(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let bytes = UnsafeRawBufferPointer(rebasing: input.prefix(maxTextInput))
        let request: UAPIRequest
        do throws(UAPIError) {
            request = try UAPIRequest.parse(bytes)
        } catch {
            checkErrorReply(error, to: nil)
            return .rejected("parse: \(error.description)")
        }
        switch request {
        case .get:
            checkGetReply(UAPIDeviceState(tenant))
            return .accepted("get")
        case .set(let set):
            let result: TenantConfiguration
            do throws(UAPIError) {
                result = try set.applied(to: tenant)
            } catch {
                checkErrorReply(error, to: .set)
                return .rejected("apply: \(error.description)")
            }
            checkPeers(result.peers, own: result.privateKey.publicKey, what: "the tenant after a set")
            checkGetReply(UAPIDeviceState(result))
            return .accepted("set: \(result.peers.count) peers")
        }
    }

    private static func checkGetReply(_ state: UAPIDeviceState) {
        var reply = state.renderGetReply()
        defer { reply.withUnsafeMutableBytes { wipe($0) } }
        guard reply.count >= 9, reply.suffix(9).elementsEqual("errno=0\n\n".utf8) else {
            finding("a get reply that does not end errno=0 and a blank line")
        }
        // A get reply parses as no request: it has no operation line.
        let lines = reply.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        guard lines.count >= 3, lines.dropLast(2).allSatisfy({ $0.contains(UInt8(ascii: "=")) }) else {
            finding("a get reply with a line that is not key=value")
        }
    }

    private static func checkErrorReply(_ error: UAPIError, to operation: UAPIOperation?) {
        guard error.errno != 0 else { finding("a refusal with errno 0: \(error.message)") }
        let reply = String(decoding: error.renderReply(to: operation), as: UTF8.self)
        guard reply.hasPrefix("errno="), reply.hasSuffix("\n\n"), reply != "errno=0\n\n" else {
            finding("a refusal renders \(reply.debugDescription)")
        }
    }
}
