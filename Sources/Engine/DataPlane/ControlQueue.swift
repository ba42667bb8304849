import CXDPWG
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// What a worker hands the control plane.
public enum ControlMessageKind: UInt8, Sendable {
    /// A handshake message (initiation, response, cookie reply) from the uplink, with where it
    /// came from.
    case handshake
    /// An inner packet from a tenant for a peer without a usable session: stage it and
    /// start a handshake.
    case stagedPacket
    /// A transport message authenticated with a keypair that is not yet the peer's sending
    /// keypair (the responder's "next" keypair, confirmed by the initiator's first message).
    case keypairConfirmed
    /// An authenticated transport message came from an address other than the peer's known
    /// endpoint: roaming.
    case endpointChanged
}

/// One fixed-size slot of a `ControlQueue`: a header the worker fills in, then the bytes.
/// Plain memory; the queue's indices order the hand-over.
public struct ControlMessage {
    public static let slotSize = 2048
    public static let headerSize = 96
    public static let payloadCapacity = slotSize - headerSize

    public var kind: ControlMessageKind = .handshake
    public var worker: UInt16 = 0
    public var tenant: UInt32 = 0
    public var peer: UInt32 = 0
    /// The keypair's local index (`keypairConfirmed`).
    public var localIndex: UInt32 = 0
    public var length: UInt16 = 0
    /// The outer addresses of a received frame (`handshake`, `endpointChanged`): the sender's
    /// (source) and ours (destination), 4 or 16 bytes used.
    public var isIPv6 = false
    public var sourcePort: UInt16 = 0
    public var destinationPort: UInt16 = 0
    public var vlanTCI: UInt16 = 0
    public var source: (UInt64, UInt64) = (0, 0)
    public var destination: (UInt64, UInt64) = (0, 0)
    /// The previous hop's MAC (the frame's Ethernet source) and ours (its destination).
    public var sourceMAC = EthernetAddress.zero
    public var destinationMAC = EthernetAddress.zero
    public var endpointKey: UInt64 = 0

    public init() {}

    /// Fills the outer-address fields from a parsed uplink frame.
    @inline(__always)
    public mutating func setOuter(_ outer: OuterFrame, frame: UnsafeRawPointer) {
        isIPv6 = outer.isIPv6
        sourcePort = outer.sourcePort
        destinationPort = outer.destinationPort
        vlanTCI = outer.vlanTCI
        let n = outer.isIPv6 ? 16 : 4
        source = (0, 0)
        destination = (0, 0)
        withUnsafeMutableBytes(of: &source) { $0.baseAddress!.copyMemory(from: outer.sourceAddress(in: frame), byteCount: n) }
        withUnsafeMutableBytes(of: &destination) {
            $0.baseAddress!.copyMemory(from: outer.destinationAddress(in: frame), byteCount: n)
        }
        sourceMAC = EthernetAddress(loadingFrom: frame + 6)
        destinationMAC = EthernetAddress(loadingFrom: frame)
        endpointKey = outer.endpointKey(in: frame)
    }

    public var sourceAddress: IPAddress { ControlMessage.address(source, isIPv6) }
    public var destinationAddress: IPAddress { ControlMessage.address(destination, isIPv6) }

    static func address(_ words: (UInt64, UInt64), _ v6: Bool) -> IPAddress {
        withUnsafeBytes(of: words) { IPAddress(bytes: Array($0.prefix(v6 ? 16 : 4)))! }
    }
}

/// A single-producer (one worker), single-consumer (the control plane) queue of fixed
/// 2 KiB slots. No locks: the producer writes a slot, then publishes it with a release store
/// of `tail`; the consumer reads `tail` with acquire, copies, then frees with a release store
/// of `head`. The worker rings the eventfd once per batch that queued something, so the
/// control thread can sleep in poll.
public final class ControlQueue: @unchecked Sendable {
    public let capacity: Int
    private let memory: UnsafeMutableRawPointer
    /// [head: next slot to read (consumer), tail: next slot to write (producer)], on
    /// separate cache lines.
    private let indices: UnsafeMutablePointer<Atomic<Int>>
    private var head: UnsafeMutablePointer<Atomic<Int>> { indices }
    private var tail: UnsafeMutablePointer<Atomic<Int>> { indices + 8 }
    /// Written by the producer when it queued something; polled by the control thread.
    public let eventFD: Int32
    /// What the worker holds: plain values, no reference to this object.
    public let producer: Producer

    public init(capacity: Int = 512) {
        precondition(MemoryLayout<ControlMessage>.stride <= ControlMessage.headerSize, "ControlMessage outgrew its slot header")
        var c = 2
        while c < capacity { c <<= 1 }
        self.capacity = c
        memory = .allocate(byteCount: c * ControlMessage.slotSize, alignment: 64)
        indices = .allocate(capacity: 16)
        for i in 0..<16 { (indices + i).initialize(to: Atomic(0)) }
        eventFD = cxdpwg_eventfd_nonblocking()
        precondition(eventFD >= 0, "eventfd failed: \(Errno.text(errno))")
        producer = Producer(memory: memory, head: indices, tail: indices + 8, capacity: c, eventFD: eventFD)
    }

    deinit {
        memory.deallocate()
        indices.deinitialize(count: 16)
        indices.deallocate()
        close(eventFD)
    }

    public func reserve() -> (header: UnsafeMutablePointer<ControlMessage>, payload: UnsafeMutableRawPointer)? {
        producer.reserve()
    }
    public func commit() { producer.commit() }
    public func notify() { producer.notify() }

    // MARK: Consumer (the control thread)

    /// Calls `body` for every queued message, oldest first, then frees their slots.
    public func drain(_ body: (UnsafePointer<ControlMessage>, UnsafeRawBufferPointer) -> Void) {
        var count: UInt64 = 0
        _ = read(eventFD, &count, 8)
        let t = tail.pointee.load(ordering: .acquiring)
        var h = head.pointee.load(ordering: .relaxed)
        while h != t {
            let slot = memory + (h & (capacity - 1)) * ControlMessage.slotSize
            let header = UnsafePointer(slot.assumingMemoryBound(to: ControlMessage.self))
            let length = min(Int(header.pointee.length), ControlMessage.payloadCapacity)
            body(header, UnsafeRawBufferPointer(start: slot + ControlMessage.headerSize, count: length))
            h += 1
            head.pointee.store(h, ordering: .releasing)
        }
    }
}

extension ControlQueue {
    /// The worker's end of the queue, as plain values (no reference counting per packet).
    /// Valid while the queue lives.
    public struct Producer: @unchecked Sendable {
        let memory: UnsafeMutableRawPointer
        let head: UnsafeMutablePointer<Atomic<Int>>
        let tail: UnsafeMutablePointer<Atomic<Int>>
        let capacity: Int
        let eventFD: Int32

    /// Reserves the next slot: its header and payload area, or nil when the queue is full, or
    /// when fewer than `spare` slots would stay free after it (room kept for messages that
    /// matter more). Fill them, then `commit()`.
    @inline(__always)
    public func reserve(leaving spare: Int = 0) -> (header: UnsafeMutablePointer<ControlMessage>, payload: UnsafeMutableRawPointer)? {
        let t = tail.pointee.load(ordering: .relaxed)
        guard t - head.pointee.load(ordering: .acquiring) < capacity - spare else { return nil }
        let slot = memory + (t & (capacity - 1)) * ControlMessage.slotSize
        let header = slot.bindMemory(to: ControlMessage.self, capacity: 1)
        return (header, slot + ControlMessage.headerSize)
    }

    /// Publishes the reserved slot.
    @inline(__always)
    public func commit() {
        tail.pointee.store(tail.pointee.load(ordering: .relaxed) + 1, ordering: .releasing)
    }

    /// Wakes the control thread (once per batch that committed something).
    @inline(__always)
    public func notify() {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }
    }
}
