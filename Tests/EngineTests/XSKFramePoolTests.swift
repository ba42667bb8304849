import Engine
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// FramePool and XDPError need no kernel objects.
@Suite struct XSKFramePoolTests {
    @Test func lifoOrderAndCount() {
        let pool = FramePool(capacity: 4, frameSize: 2048)
        let (empty, count, capacity) = (pool.isEmpty, pool.count, pool.capacity)
        #expect(empty && count == 0 && capacity == 4)
        #expect(pool.pop() == nil)
        pool.push(0)
        pool.push(2048)
        pool.push(4096)
        let three = pool.count
        #expect(three == 3)
        #expect(pool.pop() == 4096)
        #expect(pool.pop() == 2048)
        pool.push(6144)
        #expect(pool.pop() == 6144)
        #expect(pool.pop() == 0)
        #expect(pool.pop() == nil)
    }

    @Test func pushStoresFrameStarts() {
        // An RX descriptor address is frame start + 256 (headroom); a TX address may point
        // anywhere in the frame. The pool keeps only the frame start.
        let pool = FramePool(capacity: 3, frameSize: 2048)
        pool.push(5 * 2048 + 256)
        pool.push(7 * 2048 + 2047)
        pool.push(9 * 4096)
        #expect(pool.pop() == 9 * 4096)
        #expect(pool.pop() == 7 * 2048)
        #expect(pool.pop() == 5 * 2048)
    }

    @Test func batches() {
        let pool = FramePool(capacity: 8, frameSize: 4096)
        let input: [UInt64] = [0, 4096, 8192 + 100, 12288, 16384]
        input.withUnsafeBufferPointer { pool.pushBatch(from: $0.baseAddress!, count: $0.count) }
        let five = pool.count
        #expect(five == 5)
        var out = [UInt64](repeating: .max, count: 8)
        let n = out.withUnsafeMutableBufferPointer { pool.popBatch(into: $0.baseAddress!, maximum: 3) }
        #expect(n == 3)
        #expect(Array(out[0..<3]) == [8192, 12288, 16384])   // the top three, in stack order
        let m = out.withUnsafeMutableBufferPointer { pool.popBatch(into: $0.baseAddress!, maximum: 8) }
        #expect(m == 2 && Array(out[0..<2]) == [0, 4096])
        let drained = pool.isEmpty
        #expect(drained)
    }

    @Test func umemFramesArithmetic() {
        let base = UnsafeMutableRawPointer(bitPattern: 0x10_0000)!
        let frames = UmemFrames(base: base, frameSize: 2048)
        #expect(frames.frame(0) == base)
        #expect(frames.frame(3 * 2048 + 256) == base + 3 * 2048 + 256)
        // Unaligned-mode encoding: offset 100 in bits 48..., address 4096.
        #expect(frames.frame(100 << 48 | 4096) == base + 4196)
        #expect(frames.frameStart(3 * 2048 + 300) == 3 * 2048)
    }

    @Test func errorDescriptions() {
        let e = XDPError("xsk_socket__create", interface: "eth0", queue: 3, returned: -EBUSY)
        #expect(e.code == EBUSY)
        #expect(e.description == "xsk_socket__create on eth0 queue 3 failed: Device or resource busy (EBUSY) — "
                + "this interface queue already has an AF_XDP socket (another process, or a socket not yet closed)")
        let p = XDPError("xsk_umem__create", returned: -EPERM)
        #expect(p.description.contains("EPERM") && p.description.contains("CAP_NET_ADMIN") && p.description.contains("CAP_BPF"))
        let m = XDPError("xsk_umem__create", returned: -ENOMEM)
        #expect(m.description.contains("RLIMIT_MEMLOCK"))
        let z = XDPError("xsk_socket__create", interface: "eth0", queue: 0, returned: -EOPNOTSUPP)
        #expect(z.description.contains("copyMode"))
        let rule = XDPError("create UMEM", code: EINVAL, detail: "frameSize must be a power of two ≥ 2048, got 1000")
        #expect(rule.description.hasPrefix("create UMEM failed: Invalid argument (EINVAL): frameSize must be"))
    }
}
