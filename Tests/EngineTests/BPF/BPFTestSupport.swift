import Engine
import CLibBPF
import CXDPWG
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Frames for the XDP programs' known-answer tables, built field by field so a test can break
/// exactly one thing. Checksums are left zero: the programs do not read them.
enum TestFrame {
    static let ethIPv4: UInt16 = 0x0800
    static let ethIPv6: UInt16 = 0x86dd
    static let ethARP: UInt16 = 0x0806
    static let vlan8021Q: UInt16 = 0x8100
    static let vlan8021AD: UInt16 = 0x88a8

    static func be16(_ value: Int) -> [UInt8] { [UInt8((value >> 8) & 0xff), UInt8(value & 0xff)] }

    /// Ethernet II, with the given VLAN tags (TPIDs, outermost first) before the ethertype.
    static func ethernet(_ ethertype: UInt16, tags: [UInt16] = [], _ payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]
        for (index, tpid) in tags.enumerated() { frame += be16(Int(tpid)) + be16(100 + index) }
        return frame + be16(Int(ethertype)) + payload
    }

    /// IPv4 with `payload`. `fragment` is the flags+offset field (0x2000 = more fragments).
    /// `options` are appended to the header and counted in IHL; `totalLengthDelta` lies in
    /// the total length field; `ihl` overrides the header length field.
    static func ipv4(protocol proto: UInt8 = 17, fragment: UInt16 = 0, options: [UInt8] = [],
                     totalLengthDelta: Int = 0, ihl: UInt8? = nil, _ payload: [UInt8]) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let headerLength = 20 + options.count
        let total = headerLength + payload.count + totalLengthDelta
        var header: [UInt8] = [0x40 | (ihl ?? UInt8(headerLength / 4)), 0]
        header += be16(total) + [0x12, 0x34] + be16(Int(fragment)) + [64, proto, 0, 0]
        header += [198, 51, 100, 1, 198, 51, 100, 2] + options
        return header + payload
    }

    /// IPv6 with `payload` directly after the fixed header; `payloadLengthDelta` lies in the
    /// payload length field.
    static func ipv6(nextHeader: UInt8 = 17, payloadLengthDelta: Int = 0, _ payload: [UInt8]) -> [UInt8] {
        var header: [UInt8] = [0x60, 0, 0, 0] + be16(payload.count + payloadLengthDelta) + [nextHeader, 64]
        header += [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        header += [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2]
        return header + payload
    }

    /// An IPv6 hop-by-hop options header (8 bytes, PadN) followed by `payload` of `next`.
    static func hopByHop(next: UInt8, _ payload: [UInt8]) -> [UInt8] {
        [next, 0, 1, 4, 0, 0, 0, 0] + payload
    }

    static func udp(source: UInt16 = 43_210, destination: UInt16, lengthDelta: Int = 0, _ payload: [UInt8]) -> [UInt8] {
        be16(Int(source)) + be16(Int(destination)) + be16(8 + payload.count + lengthDelta) + [0, 0] + payload
    }

    static func tcp(destination: UInt16, _ payload: [UInt8]) -> [UInt8] {
        be16(43_210) + be16(Int(destination)) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0] + payload
    }

    /// A WireGuard-shaped message: type byte, three reserved bytes, then filler to `size`.
    static func wireguard(type: UInt8, size: Int, reserved: [UInt8] = [0, 0, 0]) -> [UInt8] {
        let header = [type] + reserved
        guard size > 4 else { return Array(header.prefix(size)) }
        return header + (0..<(size - 4)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
    }

    static func arpRequest() -> [UInt8] {
        ethernet(ethARP, [0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0x02, 0, 0, 0, 1, 198, 51, 100, 2,
                          0, 0, 0, 0, 0, 0, 198, 51, 100, 1])
    }

    static func icmpEcho() -> [UInt8] {
        ethernet(ethIPv4, ipv4(protocol: 1, [8, 0, 0, 0, 0, 1, 0, 1] + [UInt8](repeating: 0xab, count: 32)))
    }
}

/// Namespaces and links for the BPF tests, all created inside one namespace per test so that
/// deleting the namespace removes every link (and with it every program attached to it).
extension NetworkNamespace {
    /// A veth pair `a` <-> `b` inside this namespace, both up, each end with `queues` rx and
    /// tx queues (`peerTxQueues` overrides the tx queues of `b`). IPv6 is off in the
    /// namespace, so the links stay silent (no router solicitations, MLD or DAD) and the
    /// programs' counters count only the tests' packets.
    func addVeth(_ a: String, _ b: String, queues: Int = 1, peerTxQueues: Int? = nil) throws {
        try exec(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        try Command.run(["ip", "-n", name, "link", "add", a, "numrxqueues", "\(queues)", "numtxqueues", "\(queues)",
                         "type", "veth", "peer", "name", b,
                         "numrxqueues", "\(queues)", "numtxqueues", "\(peerTxQueues ?? queues)"])
        try Command.run(["ip", "-n", name, "link", "set", a, "up"])
        try Command.run(["ip", "-n", name, "link", "set", b, "up"])
    }

    /// Runs `body` with the calling thread inside this namespace (setns affects only the
    /// calling thread), so interface indexes and bpf_xdp_* calls refer to this namespace's
    /// links. The body must not suspend: it stays on this thread, which returns home after.
    func entered<T>(_ body: () throws -> T) throws -> T {
        try ThreadNetworkNamespace.run(path: "\(ThreadNetworkNamespace.directory)/\(name)", body).get()
    }

    /// The interface's index; call inside `entered`.
    static func index(of interface: String) throws -> Int32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw TestFailure("if_nametoindex(\(interface)): \(String(cString: strerror(errno)))") }
        return Int32(index)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// XDP programs the tests attach by hand, the way a crashed older run or another tool would:
/// through netlink (bpf_xdp_attach), which outlives the file descriptors.
enum RawXDP {
    static let nativeMode: UInt32 = 1 << 2
    static let genericMode: UInt32 = 1 << 1
    static let replace: UInt32 = 1 << 4

    /// A two-instruction XDP program that returns XDP_PASS, under a name of our choosing: a
    /// stand-in for somebody else's program. The caller closes the descriptor.
    static func loadPassProgram(name: String) throws -> Int32 {
        var movR0 = bpf_insn()
        movR0.code = UInt8(BPF_ALU64 | BPF_MOV | BPF_K)  // r0 = XDP_PASS
        movR0.imm = Int32(XDP_PASS.rawValue)
        var exit = bpf_insn()
        exit.code = UInt8(BPF_JMP | BPF_EXIT)
        let program = [movR0, exit]
        let fd = program.withUnsafeBufferPointer {
            bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", $0.baseAddress, $0.count, nil)
        }
        guard fd >= 0 else { throw TestFailure("bpf_prog_load(\(name)): \(String(cString: strerror(-fd)))") }
        return fd
    }

    static func attach(programFD: Int32, interfaceIndex: Int32, mode: UInt32) throws {
        let rc = bpf_xdp_attach(interfaceIndex, programFD, mode, nil)
        guard rc == 0 else { throw TestFailure("bpf_xdp_attach: \(String(cString: strerror(-rc)))") }
    }

    /// Detaches `programFD`'s program from the interface if it is still the one attached.
    static func detach(programFD: Int32, interfaceIndex: Int32, mode: UInt32) {
        var options = bpf_xdp_attach_opts()
        options.sz = MemoryLayout<bpf_xdp_attach_opts>.size
        options.old_prog_fd = programFD
        _ = bpf_xdp_detach(interfaceIndex, mode | replace, &options)
    }
}
