import Engine
#if canImport(Glibc)
import Glibc
#endif

/// The receive step a worker runs, written over the Engine API for the tests: peek a batch,
/// look at each frame, return its frame to the pool, release the batch, refill the fill ring.
/// Counts what it hands to the kernel so a test can check that no frame leaks.
final class RxLoop {
    let socket: XskSocket
    let pool: FramePool
    let frames: UmemFrames
    /// Frames put on the fill ring, and descriptors received back.
    private(set) var handedToFill = 0
    private(set) var received = 0
    /// Times the fill ring asked for a wakeup.
    private(set) var fillWakeups = 0
    /// Times a ring's published index lagged what we had reserved or peeked (a partial
    /// submit or release): the kernel would never see those entries.
    private(set) var ringInvariantViolations = 0

    init(socket: XskSocket, pool: consuming FramePool) {
        self.socket = socket
        self.pool = pool
        frames = socket.umem.frames
        replenish()
    }

    /// Frames the kernel holds (on the fill ring or being received into).
    var inFlight: Int { handedToFill - received }

    func replenish() {
        handedToFill += Int(socket.fillRing.replenish(from: pool, maximum: UInt32(pool.count)))
        if socket.fill.pointee.producer.pointee != socket.fill.pointee.cached_prod { ringInvariantViolations += 1 }
        if socket.fillRing.needsWakeup {
            fillWakeups += 1
            socket.wakeFill()
        }
    }

    /// Receives until `count` frames arrived or `timeoutMilliseconds` passed; returns how many.
    /// `body` sees each descriptor's address and the packet bytes.
    @discardableResult
    func receive(count: Int, timeoutMilliseconds: Int = 3000,
                 _ body: (UInt64, UnsafeRawBufferPointer) throws -> Void = { _, _ in }) rethrows -> Int {
        let rx = socket.rxRing
        let deadline = monotonicMilliseconds() + timeoutMilliseconds
        var got = 0
        while got < count && monotonicMilliseconds() < deadline {
            let (n, index) = rx.peek(maximum: 64)
            if n == 0 {
                replenish()
                usleep(200)
                continue
            }
            for i in 0..<n {
                let d = rx.descriptor(index &+ i)
                try body(d.addr, UnsafeRawBufferPointer(start: frames.frame(d.addr), count: Int(d.len)))
                pool.push(d.addr)
            }
            rx.release(n)
            if socket.rx.pointee.consumer.pointee != socket.rx.pointee.cached_cons { ringInvariantViolations += 1 }
            received += Int(n)
            got += Int(n)
            replenish()
        }
        return got
    }
}

/// The transmit step: frames are written into UMEM frames from the pool, described on the
/// TX ring, submitted, kicked (copy mode sends ≤ 32 per kick) and their completions drained
/// back into the pool.
final class TxLoop {
    let socket: XskSocket
    let pool: FramePool
    let frames: UmemFrames
    private(set) var submitted = 0
    private(set) var completed = 0
    private(set) var kicks = 0
    /// Kicks that returned an errno the socket does not tolerate.
    private(set) var kickErrors: [Int32] = []
    /// Whether the TX ring asked for a wakeup each time we looked after a submit.
    private(set) var txNeedsWakeupSeen: [Bool] = []
    /// As in RxLoop: published producer/consumer indices lagging our own.
    private(set) var ringInvariantViolations = 0

    init(socket: XskSocket, pool: consuming FramePool) {
        self.socket = socket
        self.pool = pool
        frames = socket.umem.frames
    }

    var inFlight: Int { submitted - completed }

    struct OutOfFrames: Error {}
    struct RingFull: Error {}

    /// Puts `packets` on the TX ring in one reservation and submits them (no kick yet).
    func enqueue(_ packets: [[UInt8]]) throws {
        guard pool.count >= packets.count else { throw OutOfFrames() }
        let tx = socket.txRing
        guard let index = tx.reserve(UInt32(packets.count)) else { throw RingFull() }
        for (i, packet) in packets.enumerated() {
            let address = pool.pop()!
            packet.withUnsafeBytes { frames.frame(address).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            tx.setDescriptor(index &+ UInt32(i), address: address, length: UInt32(packet.count))
        }
        tx.submit(UInt32(packets.count))
        if socket.tx.pointee.producer.pointee != socket.tx.pointee.cached_prod { ringInvariantViolations += 1 }
        submitted += packets.count
    }

    /// Kicks until the kernel has consumed the whole TX ring and every frame has completed,
    /// or the deadline passes. Returns whether everything completed.
    @discardableResult
    func flush(timeoutMilliseconds: Int = 3000) -> Bool {
        let tx = socket.txRing, completion = socket.completionRing
        let deadline = monotonicMilliseconds() + timeoutMilliseconds
        while monotonicMilliseconds() < deadline {
            if tx.outstanding > 0 {
                txNeedsWakeupSeen.append(tx.needsWakeup)
                if !socket.usesNeedWakeup || tx.needsWakeup {
                    kicks += 1
                    let e = socket.kickTransmit()
                    if e != 0 { kickErrors.append(e) }
                }
            }
            completed += Int(completion.drain(into: pool, maximum: 64))
            if socket.completion.pointee.consumer.pointee != socket.completion.pointee.cached_cons {
                ringInvariantViolations += 1
            }
            if tx.outstanding == 0 && inFlight == 0 { return true }
            if tx.outstanding == 0 { usleep(100) }
        }
        return false
    }
}
