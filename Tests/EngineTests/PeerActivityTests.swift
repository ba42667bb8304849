@testable import Engine
import Testing
import WireGuard

/// The workers tell the control plane which peers have new activity through a bitmap, so
/// that its timers never walk every peer: each stamp a worker stores sets the peer's bit
/// once, `takeActive` hands out each set bit once and clears it.
@Suite struct PeerActivityTests {
    @Test func newStampsMarkPeersOnce() {
        let table = PeerTable(capacity: 200, workerCount: 2)
        let a = table.view(worker: 0), b = table.view(worker: 1)
        let t0 = Instant(nanoseconds: 5_000_000_000)
        a.noteReceived(3, bytes: 100, keepalive: false, now: t0)
        a.noteReceived(3, bytes: 100, keepalive: false, now: t0 + .microseconds(10))   // same millisecond: no new stamp
        b.noteSent(64, bytes: 100, now: t0)
        b.noteReceived(199, bytes: 32, keepalive: true, now: t0)
        var seen: [UInt32] = []
        table.takeActive { seen.append($0) }
        #expect(seen == [3, 64, 199])
        #expect(table.activity(3).lastDataReceived == t0)
        #expect(table.activity(3).rxPackets == 2)
        seen.removeAll()
        table.takeActive { seen.append($0) }
        #expect(seen.isEmpty, "bits are handed out once")

        // Within the millisecond: counted, but no new stamp, so no new bit.
        a.noteSent(3, bytes: 1, now: t0)
        a.noteSent(3, bytes: 1, now: t0 + .microseconds(500))
        b.noteReceived(64, bytes: 1, keepalive: false, now: t0 + .milliseconds(2))
        table.takeActive { seen.append($0) }
        #expect(seen == [3, 64])
        #expect(table.activity(3).txPackets == 2)
    }
}
