import CLibBPF
import CXDPWG
@testable import Engine
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Attaching and detaching on real veth links, each test in a namespace of its own: deleting
/// the namespace deletes the links, and with them anything still attached, on every path.
@Suite(.enabled(if: Privileged.shouldRun))
struct XDPProgramAttachTests {
    static let ports: [UInt16] = [51_820, 51_821]

    /// A namespace with the veth pair xa <-> xb.
    func namespace(queues: Int = 1, peerTxQueues: Int? = nil) throws -> NetworkNamespace {
        try Privileged.require()
        let namespace = try NetworkNamespace(tag: "bpf")
        do {
            try namespace.addVeth("xa", "xb", queues: queues, peerTxQueues: peerTxQueues)
        } catch {
            namespace.close()
            throw error
        }
        return namespace
    }

    func attached(_ interface: String) throws -> [XDPAttachedProgram] {
        try XDPAttachedProgram.attached(interfaceIndex: NetworkNamespace.index(of: interface), interfaceName: interface)
    }

    @Test func nativeAttachQueryAndDetach() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", mode: .native, ports: Self.ports)
            #expect(program.attachedMode == .native)
            #expect(!program.fellBackToGeneric)
            #expect(program.nativeAttachError == nil)
            #expect(program.replacedStaleProgramID == nil)
            #expect(program.isAttached)
            #expect(program.ports == Self.ports)
            #expect(try attached("xa") == [XDPAttachedProgram(id: program.programID, name: "xdpwg_uplink", mode: .native)])
            #expect(try attached("xb").isEmpty)

            // iproute2 sees it too: native ("xdp"), our id.
            let link = try Command.run(["ip", "-d", "link", "show", "dev", "xa"])
            #expect(link.contains("prog/xdp id \(program.programID)"), "\(link)")
            #expect(link.contains("xdp ") || link.contains("xdp/"), "\(link)")
            #expect(!link.contains("xdpgeneric"), "\(link)")

            program.detach()
            #expect(!program.isAttached)
            #expect(try attached("xa").isEmpty)
            program.detach()  // idempotent
            #expect(try attached("xa").isEmpty)
        }
    }

    @Test func deinitDetaches() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            var program: TenantProgram? = try TenantProgram(interfaceIndex: index, interfaceName: "xa")
            let id = program!.programID
            #expect(try attached("xa") == [XDPAttachedProgram(id: id, name: "xdpwg_tenant", mode: .native)])
            program = nil
            #expect(try attached("xa").isEmpty)
        }
    }

    @Test func genericAttach() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", mode: .generic, ports: Self.ports)
            #expect(program.attachedMode == .generic)
            #expect(!program.fellBackToGeneric)
            #expect(try attached("xa") == [XDPAttachedProgram(id: program.programID, name: "xdpwg_uplink", mode: .generic)])
            let link = try Command.run(["ip", "-d", "link", "show", "dev", "xa"])
            #expect(link.contains("xdpgeneric"), "\(link)")
            program.detach()
            #expect(try attached("xa").isEmpty)

            let peer = try NetworkNamespace.index(of: "xb")
            let tenant = try TenantProgram(interfaceIndex: peer, interfaceName: "xb", mode: .generic)
            #expect(tenant.attachedMode == .generic)
            #expect(try attached("xb") == [XDPAttachedProgram(id: tenant.programID, name: "xdpwg_tenant", mode: .generic)])
            tenant.detach()
            #expect(try attached("xb").isEmpty)
        }
    }

    /// Native XDP on veth needs at least as many rx queues on the XDP end as the peer has tx
    /// queues; otherwise the kernel refuses native (ENOSPC) and we run generic, saying why.
    @Test func nativeFailureFallsBackToGeneric() throws {
        let ns = try namespace(queues: 1, peerTxQueues: 2)
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", mode: .native, ports: Self.ports)
            #expect(program.attachedMode == .generic)
            #expect(program.fellBackToGeneric)
            #expect(program.nativeAttachError?.errno == ENOSPC, "\(String(describing: program.nativeAttachError))")
            #expect(program.nativeAttachError?.description.contains("xa") == true)
            #expect(try attached("xa") == [XDPAttachedProgram(id: program.programID, name: "xdpwg_uplink", mode: .generic)])
            program.detach()
            #expect(try attached("xa").isEmpty)
        }
    }

    /// A program of ours attached through netlink and left behind (a crashed run of a version
    /// that attached that way, or `ip link set ... xdp obj`) is replaced, in either mode.
    @Test(arguments: [RawXDP.nativeMode, RawXDP.genericMode])
    func staleProgramOfOursIsReplaced(staleMode: UInt32) throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            var staleID: UInt32 = 0
            do {
                // Attach through netlink, then drop every descriptor: the attachment stays.
                let stale = try XDPProgramCore(.uplink)
                staleID = stale.object.programID
                try RawXDP.attach(programFD: stale.object.programFD, interfaceIndex: index, mode: staleMode)
            }
            let staleMode: XDPAttachedProgram.Mode = staleMode == RawXDP.nativeMode ? .native : .generic
            #expect(try attached("xa") == [XDPAttachedProgram(id: staleID, name: "xdpwg_uplink", mode: staleMode)])

            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", mode: .native, ports: Self.ports)
            #expect(program.replacedStaleProgramID == staleID)
            #expect(program.programID != staleID)
            #expect(program.attachedMode == .native)
            #expect(try attached("xa") == [XDPAttachedProgram(id: program.programID, name: "xdpwg_uplink", mode: .native)])
            program.detach()
            #expect(try attached("xa").isEmpty)
        }
    }

    /// Our program attached through a live link belongs to a running process: not stale.
    @Test func secondInstanceIsRefused() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let first = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            #expect(throws: BPFError.self) {
                _ = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            }
            do {
                _ = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            } catch let error as BPFError {
                #expect(error.reason == .attachedByRunningProcess(id: first.programID, mode: .native))
                #expect(error.description.contains("xa"), "\(error)")
                #expect(error.description.contains("running process"), "\(error)")
            }
            // The first one is untouched.
            #expect(try attached("xa") == [XDPAttachedProgram(id: first.programID, name: "xdpwg_uplink", mode: .native)])
            first.detach()
            #expect(try attached("xa").isEmpty)
        }
    }

    /// Somebody else's program (here: a pass-all program named foreign_pass) is never removed:
    /// init fails and names it; the uplink program is foreign to the tenant program too.
    @Test func foreignProgramIsRefused() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let foreign = try RawXDP.loadPassProgram(name: "foreign_pass")
            defer { close(foreign) }
            try RawXDP.attach(programFD: foreign, interfaceIndex: index, mode: RawXDP.nativeMode)
            defer { RawXDP.detach(programFD: foreign, interfaceIndex: index, mode: RawXDP.nativeMode) }
            let foreignID = try #require(LoadedXDPObject.programInfo(fd: foreign)).id

            for mode in [XDPAttachMode.native, .generic] {
                do {
                    _ = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", mode: mode, ports: Self.ports)
                    Issue.record("attached over a foreign program in \(mode) mode")
                } catch let error as BPFError {
                    #expect(error.reason == .foreignProgram(name: "foreign_pass", id: foreignID, mode: .native))
                    #expect(error.description.contains("'foreign_pass'"), "\(error)")
                    #expect(error.description.contains("xa"), "\(error)")
                }
            }
            #expect(try attached("xa") == [XDPAttachedProgram(id: foreignID, name: "foreign_pass", mode: .native)])

            RawXDP.detach(programFD: foreign, interfaceIndex: index, mode: RawXDP.nativeMode)
            let uplink = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            do {
                _ = try TenantProgram(interfaceIndex: index, interfaceName: "xa")
                Issue.record("the tenant program attached over the uplink program")
            } catch let error as BPFError {
                #expect(error.reason == .foreignProgram(name: "xdpwg_uplink", id: uplink.programID, mode: .native))
            }
            uplink.detach()
        }
    }

    /// What makes a crash safe: a bpf_link's program leaves the interface when the link's
    /// last descriptor closes, as it does when a process dies.
    @Test func closingTheLinkDescriptorDetaches() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let core = try XDPProgramCore(.uplink)
            var options = bpf_link_create_opts()
            options.sz = MemoryLayout<bpf_link_create_opts>.size
            options.flags = RawXDP.nativeMode
            let link = bpf_link_create(core.object.programFD, index, BPF_XDP, &options)
            try #require(link >= 0, "bpf_link_create: \(String(cString: strerror(-link)))")
            #expect(try attached("xa").map(\.id) == [core.object.programID])
            close(link)
            #expect(try attached("xa").isEmpty)
        }
    }

    @Test func registerChecksTheQueue() throws {
        let ns = try namespace()
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            do {
                try program.register(socketFD: 0, queue: UInt32(XDPWG_MAX_QUEUES))
                Issue.record("registered a queue beyond the map")
            } catch let error as BPFError {
                #expect(error.description.contains("queue 64"), "\(error)")
            }
            // Not an AF_XDP socket: the kernel refuses it.
            let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(udp) }
            do {
                try program.register(socketFD: udp, queue: 0)
                Issue.record("registered a UDP socket in an XSKMAP")
            } catch let error as BPFError {
                #expect(error.errno == EOPNOTSUPP, "\(error)")
                #expect(error.description.contains("xa"), "\(error)")
            }
            program.unregister(queue: 0)  // nothing registered: harmless
        }
    }

    /// With an AF_XDP socket in xsks_map for queue 1 of a two-queue veth, a WireGuard packet
    /// "received" on queue 1 is redirected and counted for queue 1; on queue 0, which has no
    /// socket, it is dropped as "no socket". Unregistering turns queue 1 into "no socket" too.
    @Test func redirectsAreCountedPerQueue() throws {
        let ns = try namespace(queues: 2)
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xa")
            let program = try UplinkProgram(interfaceIndex: index, interfaceName: "xa", ports: Self.ports)
            let xsk = socket(44 /* AF_XDP */, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(xsk >= 0, "socket(AF_XDP): \(String(cString: strerror(errno)))")
            defer { close(xsk) }
            try program.register(socketFD: xsk, queue: 1)

            let packet = XDPProgramVerdictTests.v4(XDPProgramVerdictTests.wg(4, 64))
            #expect(try program.testRun(packet: packet, interfaceIndex: index, queue: 1).action == .redirect)
            #expect(try program.testRun(packet: packet, interfaceIndex: index, queue: 1).action == .redirect)
            #expect(try program.testRun(packet: packet, interfaceIndex: index, queue: 0).action == .drop)
            var perQueue = program.redirectsPerQueue()
            #expect(perQueue.count == Int(XDPWG_MAX_QUEUES))
            #expect(perQueue[0] == 0 && perQueue[1] == 2 && perQueue.dropFirst(2).allSatisfy { $0 == 0 })
            var counters = program.verdictCounters()
            #expect(counters[.redirected] == 2 && counters[.droppedNoSocket] == 1)

            // A packet that is not ours is passed whatever the queue.
            #expect(try program.testRun(packet: TestFrame.arpRequest(), interfaceIndex: index, queue: 1).action == .pass)

            program.unregister(queue: 1)
            #expect(try program.testRun(packet: packet, interfaceIndex: index, queue: 1).action == .drop)
            perQueue = program.redirectsPerQueue()
            counters = program.verdictCounters()
            #expect(perQueue[1] == 2)
            #expect(counters[.redirected] == 2 && counters[.droppedNoSocket] == 2 && counters[.passed] == 1)
        }
    }

    @Test func tenantRedirectsIPFramesToItsSocket() throws {
        let ns = try namespace(queues: 2)
        defer { ns.close() }
        try ns.entered {
            let index = try NetworkNamespace.index(of: "xb")
            let program = try TenantProgram(interfaceIndex: index, interfaceName: "xb")
            let xsk = socket(44 /* AF_XDP */, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(xsk >= 0, "socket(AF_XDP): \(String(cString: strerror(errno)))")
            defer { close(xsk) }
            try program.register(socketFD: xsk, queue: 0)
            #expect(try program.testRun(packet: TestFrame.icmpEcho(), interfaceIndex: index, queue: 0).action == .redirect)
            #expect(try program.testRun(packet: TestFrame.icmpEcho(), interfaceIndex: index, queue: 1).action == .drop)
            let v6 = XDPProgramVerdictTests.v6(TestFrame.udp(destination: 53, [1]))
            #expect(try program.testRun(packet: v6, interfaceIndex: index, queue: 0).action == .redirect)
            #expect(try program.testRun(packet: TestFrame.arpRequest(), interfaceIndex: index, queue: 0).action == .pass)
            let counters = program.verdictCounters()
            #expect(counters[.redirected] == 2 && counters[.droppedNoSocket] == 1 && counters[.passed] == 1)
            #expect(program.redirectsPerQueue().prefix(2) == [2, 0])
        }
    }

    /// Real packets over a veth between two namespaces, the program attached natively on the
    /// receiving end: WireGuard-shaped UDP to our port is taken (and, with no socket yet,
    /// dropped) before the kernel's UDP socket on that port sees it; malformed UDP to our
    /// port is dropped; UDP to another port, and ARP, reach the kernel. After detach, the
    /// kernel's socket receives our port's traffic again.
    @Test func liveTrafficIsSteered() throws {
        try Privileged.require()
        let pair = try LinkedNamespaces()
        defer { pair.close() }
        let ours = try pair.left.udpSocket(port: 51_820)
        defer { close(ours) }
        let other = try pair.left.udpSocket(port: 51_821)
        defer { close(other) }
        let sender = try pair.right.udpSocket(port: 40_000)
        defer { close(sender) }

        func send(_ payload: [UInt8], to port: UInt16) throws {
            var destination = CorePeer.address(pair.leftAddress, port)
            let sent = payload.withUnsafeBytes { bytes in
                withUnsafePointer(to: &destination) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(sender, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            guard sent == payload.count else { throw TestFailure("sendto: \(String(cString: strerror(errno)))") }
        }
        /// The next datagram on `fd` within `timeout` milliseconds, or nil.
        func receive(_ fd: Int32, timeout: Int32) -> [UInt8]? {
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&poll, 1, timeout) == 1 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 2048)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            return count >= 0 ? Array(buffer.prefix(count)) : nil
        }

        let initiation = TestFrame.wireguard(type: 1, size: 148)
        let program = try pair.left.entered {
            try UplinkProgram(interfaceIndex: NetworkNamespace.index(of: "veth0"), interfaceName: "veth0",
                              mode: .native, ports: [51_820])
        }
        #expect(program.attachedMode == .native)
        try send(initiation, to: 51_820)
        try send(TestFrame.wireguard(type: 9, size: 148), to: 51_820)
        try send(initiation, to: 51_821)
        // Same path, same order: once the last one has arrived, the first two were judged.
        #expect(receive(other, timeout: 5_000) == initiation)
        #expect(receive(ours, timeout: 200) == nil)
        let counters = program.verdictCounters()
        #expect(counters[.droppedNoSocket] == 1)
        #expect(counters[.droppedBadType] == 1)
        #expect(counters[.redirected] == 0)
        #expect((counters[.passed] ?? 0) >= 2, "ARP and the datagram to the other port: \(counters)")

        program.detach()
        try send(initiation, to: 51_820)
        #expect(receive(ours, timeout: 5_000) == initiation)
        #expect(program.verdictCounters()[.droppedNoSocket] == 1)
    }
}
