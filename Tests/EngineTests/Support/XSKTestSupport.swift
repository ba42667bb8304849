import Engine
import CLibBPF
import CXDPWG
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs code on a dedicated thread that has entered a network namespace (setns), and waits
/// for it. AF_XDP sockets, interface indices and XDP attachment all belong to the namespace
/// of the thread that makes them; the thread ends afterwards, so no other code ever runs in
/// the wrong namespace.
enum NamespaceThread {
    private final class Box<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    static func run<T>(in namespace: NetworkNamespace, _ body: @escaping () throws -> T) throws -> T {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        let name = namespace.name
        nonisolated(unsafe) let work = body
        let thread = Thread {
            defer { done.signal() }
            do throws(SystemError) {
                try ThreadNetworkNamespace.enter(path: "\(ThreadNetworkNamespace.directory)/\(name)")
            } catch {
                box.result = .failure(error)
                return
            }
            box.result = Result { try work() }
        }
        thread.name = "netns-\(name)"
        thread.stackSize = 8 << 20
        thread.start()
        done.wait()
        return try box.result!.get()
    }
}

/// Two namespaces joined by a veth pair with two queues on each end:
/// `a` (interface "xa", 198.18.0.1/24) ↔ `b` (interface "xb", 198.18.0.2/24). Each side
/// knows the other's MAC statically (no ARP on the wire to confuse the counts).
final class MultiQueueVeth: @unchecked Sendable {
    let a: NetworkNamespace
    let b: NetworkNamespace
    let interfaceA = "xa"
    let interfaceB = "xb"
    let addressA = "198.18.0.1"
    let addressB = "198.18.0.2"
    let macA: [UInt8]
    let macB: [UInt8]
    let queues: Int

    init(queues: Int = 2) throws {
        self.queues = queues
        a = try NetworkNamespace(tag: "xa")
        b = try NetworkNamespace(tag: "xb")
        let q = String(queues)
        try a.exec(["ip", "link", "add", interfaceA, "numrxqueues", q, "numtxqueues", q, "type", "veth",
                    "peer", "name", interfaceB, "numrxqueues", q, "numtxqueues", q])
        try a.exec(["ip", "link", "set", interfaceB, "netns", b.name])
        try a.exec(["ip", "addr", "add", "\(addressA)/24", "dev", interfaceA])
        try b.exec(["ip", "addr", "add", "\(addressB)/24", "dev", interfaceB])
        try a.exec(["ip", "link", "set", interfaceA, "up"])
        try b.exec(["ip", "link", "set", interfaceB, "up"])
        macA = try MultiQueueVeth.mac(try a.exec(["cat", "/sys/class/net/\(interfaceA)/address"]))
        macB = try MultiQueueVeth.mac(try b.exec(["cat", "/sys/class/net/\(interfaceB)/address"]))
        try a.exec(["ip", "neigh", "replace", addressB, "lladdr", MultiQueueVeth.text(macB), "dev", interfaceA, "nud", "permanent"])
        try b.exec(["ip", "neigh", "replace", addressA, "lladdr", MultiQueueVeth.text(macA), "dev", interfaceB, "nud", "permanent"])
    }

    deinit { close() }

    func close() {
        b.close()
        a.close()
    }

    /// Sends everything `b` transmits through xb's TX queue `queue` (XPS: all CPUs map to it),
    /// which veth hands to xa's RX queue of the same number.
    func steerTransmitOfB(toQueue queue: Int) throws {
        let all = String((1 << ProcessInfo.processInfo.activeProcessorCount) - 1, radix: 16)
        for q in 0..<queues {
            try b.exec(["sh", "-c", "echo \(q == queue ? all : "0") > /sys/class/net/\(interfaceB)/queues/tx-\(q)/xps_cpus"])
        }
    }

    struct BadMAC: Error { var text: String }

    static func mac(_ text: String) throws -> [UInt8] {
        let bytes = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard bytes.count == 6 else { throw BadMAC(text: text) }
        return bytes
    }

    static func text(_ mac: [UInt8]) -> String {
        mac.map { String(format: "%02x", $0) }.joined(separator: ":")
    }
}

/// A test-only XDP program: UDP to `port` is redirected to xsks_map[rx_queue_index] (dropped
/// if that queue has no socket) and counted per queue in `seen`; everything else passes.
/// Built with clang -target bpf from the source below, loaded with libbpf, attached in
/// native mode. `detach()` is idempotent and also runs from deinit; call it on the thread
/// that attached (the namespace matters).
final class RedirectProgram {
    static let port: UInt16 = 47_000

    static let source = """
    #include <linux/bpf.h>
    #include <linux/if_ether.h>
    #include <linux/in.h>
    #include <linux/ip.h>
    #include <linux/udp.h>
    #include <bpf/bpf_helpers.h>
    #include <bpf/bpf_endian.h>

    struct {
        __uint(type, BPF_MAP_TYPE_XSKMAP);
        __uint(max_entries, 8);
        __type(key, __u32);
        __type(value, __u32);
    } xsks_map SEC(".maps");

    struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, 8);
        __type(key, __u32);
        __type(value, __u64);
    } seen SEC(".maps");

    SEC("xdp")
    int redirect_udp(struct xdp_md *ctx)
    {
        void *data = (void *)(long)ctx->data;
        void *end = (void *)(long)ctx->data_end;
        struct ethhdr *eth = data;
        if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
            return XDP_PASS;
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
            return XDP_PASS;
        struct udphdr *udp = (void *)(ip + 1);
        if ((void *)(udp + 1) > end || udp->dest != bpf_htons(\(port)))
            return XDP_PASS;
        __u32 queue = ctx->rx_queue_index;
        __u64 *count = bpf_map_lookup_elem(&seen, &queue);
        if (count)
            __sync_fetch_and_add(count, 1);
        return bpf_redirect_map(&xsks_map, queue, XDP_DROP);
    }

    char _license[] SEC("license") = "GPL";
    """

    struct Failed: Error, CustomStringConvertible {
        var step: String
        var code: Int32
        var description: String { "\(step): \(String(cString: strerror(code < 0 ? -code : code)))" }
    }

    /// The object file's bytes, compiled once per test process in a temporary directory
    /// that is removed right after.
    static func object() throws -> [UInt8] {
        try compileLock.withLock {
            if let compiled { return compiled }
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-xsk-\(getpid())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let c = dir.appendingPathComponent("redirect.bpf.c")
            let o = dir.appendingPathComponent("redirect.bpf.o")
            try source.write(to: c, atomically: true, encoding: .utf8)
            // Debian keeps <asm/types.h> in the multiarch directory, which -target bpf does not search.
            var machine = utsname()
            uname(&machine)
            let arch = withUnsafeBytes(of: machine.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            try Command.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include", "-I/usr/include/\(arch)-linux-gnu",
                             "-c", c.path, "-o", o.path])
            let bytes = [UInt8](try Data(contentsOf: o))
            compiled = bytes
            return bytes
        }
    }

    private nonisolated(unsafe) static var compiled: [UInt8]?
    private static let compileLock = NSLock()

    /// A clang with the BPF target: $XDPWG_CLANG, else the Swift toolchain's (beside `swift`
    /// on PATH), else any clang on PATH.
    static var clang: String {
        if let explicit = ProcessInfo.processInfo.environment["XDPWG_CLANG"] { return explicit }
        if let swift = try? Command.which("swift") {
            let resolved = (try? FileManager.default.destinationOfSymbolicLink(atPath: swift)).map {
                $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: swift).deletingLastPathComponent().appendingPathComponent($0).path
            } ?? swift
            let beside = URL(fileURLWithPath: resolved).deletingLastPathComponent().appendingPathComponent("clang").path
            if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        }
        return "clang"
    }

    private let object: OpaquePointer
    let ifindex: Int32
    let interface: String
    private var attached = false

    /// Loads the program and attaches it to `interface` in native (driver) mode.
    init(interface: String) throws {
        let bytes = try RedirectProgram.object()
        // The cached bytes live as long as the process, whatever libbpf keeps pointing at.
        let opened = bytes.withUnsafeBytes { bpf_object__open_mem($0.baseAddress, $0.count, nil) }
        guard let object = opened else {
            throw Failed(step: "bpf_object__open_mem (\(bytes.count)-byte test program)", code: errno)
        }
        self.object = object
        self.interface = interface
        // Every stored property is set before the first throw, so deinit closes the object.
        ifindex = Int32(if_nametoindex(interface))
        guard ifindex > 0 else { throw Failed(step: "if_nametoindex \(interface)", code: errno) }
        let rc = bpf_object__load(object)
        guard rc == 0 else { throw Failed(step: "bpf_object__load", code: rc) }
        guard let program = bpf_object__find_program_by_name(object, "redirect_udp") else {
            throw Failed(step: "find program redirect_udp", code: ENOENT)
        }
        let attach = bpf_xdp_attach(ifindex, bpf_program__fd(program), RedirectProgram.driverMode, nil)
        guard attach == 0 else { throw Failed(step: "bpf_xdp_attach(\(interface), native)", code: attach) }
        attached = true
    }

    /// XDP_FLAGS_DRV_MODE from <linux/if_link.h>.
    static let driverMode: UInt32 = 1 << 2

    private func mapFD(_ name: String) throws -> Int32 {
        let fd = bpf_object__find_map_fd_by_name(object, name)
        guard fd >= 0 else { throw Failed(step: "find map \(name)", code: fd) }
        return fd
    }

    /// xsks_map[queue] = socket fd.
    func insert(socket fd: Int32, queue: UInt32) throws {
        var key = queue, value = UInt32(fd)
        let rc = bpf_map_update_elem(try mapFD("xsks_map"), &key, &value, UInt64(BPF_ANY))
        guard rc == 0 else { throw Failed(step: "bpf_map_update_elem(xsks_map[\(queue)])", code: rc) }
    }

    /// How many matching frames the program has seen on RX queue `queue`.
    func seen(queue: UInt32) throws -> UInt64 {
        var key = queue, value: UInt64 = 0
        let rc = bpf_map_lookup_elem(try mapFD("seen"), &key, &value)
        guard rc == 0 else { throw Failed(step: "bpf_map_lookup_elem(seen[\(queue)])", code: rc) }
        return value
    }

    func detach() {
        if attached {
            _ = bpf_xdp_detach(ifindex, RedirectProgram.driverMode, nil)
            attached = false
        }
    }

    deinit {
        detach()
        bpf_object__close(object)
    }
}

/// Ethernet + IPv4 + UDP frames with complete checksums (the IPv4/UDP part from `Packets`).
enum Frames {
    static func udp(sourceMAC: [UInt8], destinationMAC: [UInt8], source: String, sourcePort: UInt16,
                    destination: String, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        destinationMAC + sourceMAC + [0x08, 0x00]
            + Packets.udp(source: source, sourcePort: sourcePort, destination: destination,
                          destinationPort: destinationPort, payload: payload)
    }

    /// A recognisable payload: the sequence number (big-endian UInt32) then a pattern.
    static func payload(sequence: UInt32, length: Int) -> [UInt8] {
        var p = withUnsafeBytes(of: sequence.bigEndian, Array.init)
        while p.count < length { p.append(UInt8(truncatingIfNeeded: p.count &* 7 &+ Int(sequence))) }
        return p
    }

    static func sequence(of payload: some Collection<UInt8>) -> UInt32? {
        guard payload.count >= 4 else { return nil }
        return payload.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
}

/// Small socket helpers for the plain UDP side of the tests.
enum UDP {
    struct Failed: Error, CustomStringConvertible {
        var step: String
        var code: Int32
        var description: String { "\(step): \(String(cString: strerror(code)))" }
    }

    static func send(_ fd: Int32, _ bytes: [UInt8], to address: String, port: UInt16) throws {
        var to = CorePeer.address(address, port)
        let rc = bytes.withUnsafeBytes { buffer in
            withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buffer.baseAddress, buffer.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard rc == bytes.count else { throw Failed(step: "sendto \(address):\(port)", code: errno) }
    }

    /// One datagram, or nil after `timeoutMilliseconds` without one.
    static func receive(_ fd: Int32, timeoutMilliseconds: Int32) throws -> [UInt8]? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, timeoutMilliseconds)
        guard ready > 0 else {
            if ready < 0 { throw Failed(step: "poll", code: errno) }
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        guard n >= 0 else { throw Failed(step: "recv", code: errno) }
        return Array(buffer[0..<n])
    }
}

/// Monotonic milliseconds, for test deadlines.
func monotonicMilliseconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}
