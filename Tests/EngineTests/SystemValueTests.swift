@testable import Engine
import Foundation
import Testing
import WireGuard

@Suite struct SystemValueTests {
    @Test func ethernetAddressTextRoundTrip() {
        let mac = EthernetAddress("02:AB:cd:0:1:ff")
        #expect(mac == EthernetAddress(0x02, 0xab, 0xcd, 0x00, 0x01, 0xff))
        #expect(mac?.description == "02:ab:cd:00:01:ff")
        #expect(mac?.bytes == [0x02, 0xab, 0xcd, 0x00, 0x01, 0xff])
        #expect(EthernetAddress("02-ab-cd-00-01-ff") == mac)
        #expect(EthernetAddress.broadcast.description == "ff:ff:ff:ff:ff:ff")
        #expect(EthernetAddress.broadcast.isMulticast)
        #expect(mac?.isMulticast == false)
        #expect(EthernetAddress("01:00:5e:00:00:01")?.isMulticast == true)
        for bad in ["", "02:ab:cd:00:01", "02:ab:cd:00:01:ff:00", "02:ab:cd:00:01:fff", "02:ab:cd:00:01:+f",
                    "02:ab:cd:00:01:", "02ab:cd:00:01:ff:00", "g2:ab:cd:00:01:ff", "02:ab-cd:00:01:ff"] {
            #expect(EthernetAddress(bad) == nil, "accepted \(bad)")
        }
    }

    @Test func ethernetAddressBytesAndMemory() {
        #expect(EthernetAddress(bytes: [1, 2, 3, 4, 5]) == nil)
        let mac = EthernetAddress(bytes: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])!
        #expect(mac.rawValue == 0xaabb_ccdd_eeff)
        #expect(EthernetAddress(rawValue: 0x1234_aabb_ccdd_eeff) == mac, "only 48 bits are kept")
        var frame = [UInt8](repeating: 0, count: 8)
        frame.withUnsafeMutableBytes { mac.store(to: $0.baseAddress! + 1) }
        #expect(frame == [0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0])
        #expect(frame.withUnsafeBytes { EthernetAddress(loadingFrom: $0.baseAddress! + 1) } == mac)
        #expect(MemoryLayout<EthernetAddress>.size == 8)
    }

    @Test func cpuListFormat() {
        #expect(CPUTopology.parseCPUList("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11])
        #expect(CPUTopology.parseCPUList("5") == [5])
        #expect(CPUTopology.parseCPUList("") == [])
        for bad in ["3-1", "a", "1,,2", "1-2-3", "-1", "0-"] {
            #expect(CPUTopology.parseCPUList(bad) == nil, "accepted \(bad)")
        }
    }

    /// The allowed cores are what the kernel reports for this process in /proc.
    @Test func allowedCoresMatchProc() throws {
        let status = try String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
        let list = line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
        #expect(CPUTopology.allowedCores() == CPUTopology.parseCPUList(list))
        #expect(CPUTopology.cores(onNode: nil) == CPUTopology.allowedCores())
        // Node 0 exists on every NUMA-aware kernel; its cores are a subset of the allowed ones.
        if let text = try? String(contentsOfFile: "/sys/devices/system/node/node0/cpulist", encoding: .utf8) {
            let node0 = Set(try #require(CPUTopology.parseCPUList(text)))
            let expected = CPUTopology.allowedCores().filter { node0.contains($0) }
            #expect(CPUTopology.cores(onNode: 0) == (expected.isEmpty ? CPUTopology.allowedCores() : expected))
        }
        // A node that does not exist falls back to every allowed core.
        #expect(CPUTopology.cores(onNode: 4095) == CPUTopology.allowedCores())
    }

    /// Pinning changes the calling thread's affinity (checked through the kernel) and only it.
    @Test func pinsAndNamesOnlyTheCallingThread() throws {
        let before = CPUTopology.allowedCores()
        let last = try #require(before.last)
        let (pinned, name, longName) = try onDedicatedThread {
            try CPUTopology.pinCurrentThread(to: last)
            let pinned = CPUTopology.allowedCores()
            CPUTopology.setCurrentThreadName("xdpwg-w0")
            let name = CPUTopology.currentThreadName()
            CPUTopology.setCurrentThreadName("xdpwg-worker-0123456789")
            return (pinned, name, CPUTopology.currentThreadName())
        }
        #expect(pinned == [last])
        #expect(name == "xdpwg-w0")
        #expect(longName == "xdpwg-worker-01", "Linux keeps 15 bytes of a thread name")
        #expect(CPUTopology.allowedCores() == before, "the test runner's thread must be unaffected")
        #expect(throws: SystemError.self) { try onDedicatedThread { try CPUTopology.pinCurrentThread(to: 100_000) } }
        #expect(throws: SystemError.self) { try onDedicatedThread { try CPUTopology.pinCurrentThread(to: -1) } }
    }

    @Test func namesAreValidatedBeforeUse() {
        for good in ["eth0", "xw-1.a_b", String(repeating: "a", count: 15)] {
            #expect(throws: Never.self) { try Names.validateInterface(good) }
        }
        for bad in ["", String(repeating: "a", count: 16), "-rf", ".hidden", "a b", "a/b", "a:b", "ä0", "x\n"] {
            #expect(throws: SystemError.self, "accepted \(bad)") { try Names.validateInterface(bad) }
        }
        #expect(throws: Never.self) { try Names.validateNamespace("xdpwg-t1234-10-tenant-alpha") }
        #expect(throws: SystemError.self) { try Names.validateNamespace("..") }
        #expect(throws: SystemError.self) { try Names.validateNamespace("a/../b") }
    }

    @Test func tenantSpecValidation() throws {
        func spec(_ change: (inout TenantLinkSpec) -> Void) -> TenantLinkSpec {
            var s = TenantLinkSpec(namespace: "tenant", hostName: "xt0", innerName: "wg0", queues: 2,
                                   addresses: [(IPAddress("10.0.0.1")!, 24), (IPAddress("fd00::1")!, 64)],
                                   routes: [IPPrefix("10.1.0.0/16")!], mtu: 1420)
            change(&s)
            return s
        }
        #expect(throws: Never.self) { try spec { _ in }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.queues = 0 }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.mtu = 1279 }.validate() } // IPv6 present
        #expect(throws: Never.self) { try spec { $0.mtu = 576; $0.addresses.removeLast() }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.addresses[0].prefixLength = 33 }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.hostName = "way-too-long-name" }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.innerName = "wg 0" }.validate() }
        #expect(throws: SystemError.self) { try spec { $0.namespace = "../etc" }.validate() }
    }

    @Test func subprocessCapturesBothStreamsAndStatus() throws {
        let sh = try #require(Subprocess.which("sh"))
        #expect(sh.hasPrefix("/"))
        let result = try Subprocess.run([sh, "-c", "echo out; echo err >&2; exit 3"])
        #expect(result.status == 3)
        #expect(result.standardOutput == "out\n")
        #expect(result.standardError == "err\n")
        // More output than any socket buffer holds, on both streams at once.
        let big = try Subprocess.run([sh, "-c", "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2"])
        #expect(big.standardOutput.utf8.count == 300_000)
        #expect(big.standardError.utf8.count == 300_000)
        let killed = try Subprocess.run([sh, "-c", "kill -9 $$"])
        #expect(killed.status == 128 + 9)
        #expect(throws: SystemError.self) { try Subprocess.run(["/nonexistent/program"]) }
    }
}
