import CLibBPF
import Engine
#if canImport(Glibc)
import Glibc
#endif

/// The perf lab's live-frame generator (`xdpwg_blast` in bpf/bench/bench.bpf.c): an XDP program
/// that is never attached, but run through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES:
/// the kernel runs it on frames of its own page pool and transmits every frame it returns
/// XDP_TX for out of the "ingress" interface given, as an xdp_frame (no skb, no socket). Each
/// run copies the next frame of a pool — an mmapable BPF array that user space fills — into
/// the packet. `LiveFrameBlaster` drives it.
public final class BenchBlastProgram: @unchecked Sendable {
    /// Which frames to send next, how, and what happened (struct blast_control).
    public struct Control: Sendable, Equatable {
        /// The next frame to send.
        public var next: UInt64
        /// Frames cycled through: begin..<end.
        public var begin: UInt64
        public var end: UInt64
        /// Frames the program returned XDP_TX for since the counters were last written.
        public var sent: UInt64
        /// Runs that sent nothing: no pool installed, or a frame length out of range.
        public var failed: UInt64
        /// Pacing: nanoseconds between frames (0: as fast as the kernel runs the program).
        public var intervalNanoseconds: UInt64
        /// Pacing: when the next frame is due (the kernel's monotonic clock; 0: at once).
        public var dueNanoseconds: UInt64
        /// Sending stops once `sent` reaches this (0: no limit).
        public var limit: UInt64
        /// Every run of the program, paced runs that sent nothing included.
        public var runs: UInt64

        public init(next: UInt64, begin: UInt64, end: UInt64, sent: UInt64 = 0, failed: UInt64 = 0,
                    intervalNanoseconds: UInt64 = 0, dueNanoseconds: UInt64 = 0, limit: UInt64 = 0, runs: UInt64 = 0) {
            self.next = next
            self.begin = begin
            self.end = end
            self.sent = sent
            self.failed = failed
            self.intervalNanoseconds = intervalNanoseconds
            self.dueNanoseconds = dueNanoseconds
            self.limit = limit
            self.runs = runs
        }
    }

    /// struct blast_control as the map stores it: nine 64-bit fields in declaration order.
    typealias RawControl = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    /// Bytes per pool slot: up to `maxFrameLength` bytes of frame, then its 32-bit length.
    public static let slotSize = 2048
    public static let maxFrameLength = 2040
    /// Where the length sits in a slot.
    public static let lengthOffset = 2040
    /// The most frames one test run may batch (the kernel's limit, TEST_XDP_MAX_BATCH).
    public static let maxBatchSize: UInt32 = 256

    public let programID: UInt32
    private let object: LoadedXDPObject
    private let poolMap: Int32
    private let controlMap: Int32

    static let programName = "xdpwg_blast"

    /// Loads the program (nothing is attached).
    public init() throws(BPFError) {
        object = try LoadedXDPObject(.bench, programName: BenchBlastProgram.programName)
        poolMap = try object.mapFD("xdpwg_blast_pool")
        controlMap = try object.mapFD("xdpwg_blast_ctl")
        programID = object.programID
    }

    /// Makes `pool` the frames the program sends.
    public func install(_ pool: LiveFramePoolMap) throws(BPFError) {
        var key: UInt32 = 0
        var fd = UInt32(bitPattern: pool.fd)
        let rc = bpf_map_update_elem(poolMap, &key, &fd, UInt64(BPF_ANY))
        guard rc == 0 else { throw .system("install a frame pool in \(BenchBlastProgram.programName)", errno: -rc) }
    }

    public func writeControl(_ control: Control) throws(BPFError) {
        var key: UInt32 = 0
        var value: RawControl = (control.next, control.begin, control.end, control.sent, control.failed,
                                 control.intervalNanoseconds, control.dueNanoseconds, control.limit, control.runs)
        let rc = bpf_map_update_elem(controlMap, &key, &value, UInt64(BPF_ANY))
        guard rc == 0 else { throw .system("write \(BenchBlastProgram.programName)'s control", errno: -rc) }
    }

    /// Safe while a run is going on (another thread's): a snapshot of the counters.
    public func readControl() throws(BPFError) -> Control {
        var key: UInt32 = 0
        var value: RawControl = (0, 0, 0, 0, 0, 0, 0, 0, 0)
        let rc = bpf_map_lookup_elem(controlMap, &key, &value)
        guard rc == 0 else { throw .system("read \(BenchBlastProgram.programName)'s control", errno: -rc) }
        return Control(next: value.0, begin: value.1, end: value.2, sent: value.3, failed: value.4,
                       intervalNanoseconds: value.5, dueNanoseconds: value.6, limit: value.7, runs: value.8)
    }

    /// Runs the program `count` times in live-frames mode, `batchSize` frames per batch (the
    /// kernel flushes transmissions after each), with `template` as every page's initial
    /// content (its length is the frame's length before the program resizes it; 14 to 3520
    /// bytes). The frames leave through interface `interfaceIndex` of the calling thread's
    /// network namespace (a veth needs an XDP program on its peer to take them). Returns
    /// early with EINTR when a signal is pending; the control counters tell what was sent.
    public func runLive(template: UnsafeRawBufferPointer, interfaceIndex: Int32, count: Int32,
                        batchSize: UInt32 = 64) throws(BPFError) {
        var context = xdp_md()
        context.data = 0
        context.data_end = UInt32(template.count)
        context.ingress_ifindex = UInt32(bitPattern: interfaceIndex)
        var options = bpf_test_run_opts()
        zeroAllBytes(&options)
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        options.data_in = template.baseAddress
        options.data_size_in = UInt32(template.count)
        options.repeat = count
        options.flags = UInt32(BPF_F_TEST_XDP_LIVE_FRAMES)
        options.batch_size = batchSize
        let rc = withUnsafePointer(to: &context) { ctx in
            options.ctx_in = UnsafeRawPointer(ctx)
            options.ctx_size_in = UInt32(MemoryLayout<xdp_md>.size)
            return bpf_prog_test_run_opts(object.programFD, &options)
        }
        guard rc == 0 else {
            throw .system("run \(BenchBlastProgram.programName) on live frames (\(count) × \(template.count) bytes)",
                          errno: -rc)
        }
    }

    /// Creates a pool for `capacity` frames: an mmapable BPF array of 2048-byte slots, mapped
    /// into this process. Kernel memory (charged to the memory cgroup), allocated whole.
    public static func createPool(capacity: Int) throws(BPFError) -> LiveFramePoolMap {
        let operation = "create a live-frame pool of \(capacity) frames"
        guard capacity > 0, let entries = UInt32(exactly: capacity) else {
            throw BPFError(operation, reason: .invalidArgument("the capacity must be 1 to \(UInt32.max)"))
        }
        var options = bpf_map_create_opts()
        zeroAllBytes(&options)
        options.sz = MemoryLayout<bpf_map_create_opts>.size
        // The flags must equal the template's in bpf/bench/bench.bpf.c, or the kernel refuses the
        // map as an inner map.
        options.map_flags = UInt32(BPF_F_MMAPABLE | BPF_F_INNER_MAP)
        let fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "xdpwg_blast_frm", 4, UInt32(slotSize), entries, &options)
        guard fd >= 0 else { throw .system(operation, errno: -fd) }
        let length = (capacity * slotSize + Int(getpagesize()) - 1) / Int(getpagesize()) * Int(getpagesize())
        let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let base, base != MAP_FAILED else {
            let code = errno
            close(fd)
            throw .system("\(operation): mmap \(length) bytes", errno: code)
        }
        return LiveFramePoolMap(fd: fd, base: base, length: length, capacity: capacity)
    }
}

/// A live-frame pool's BPF array, mapped: slot i at `base + i * 2048`. Unmapped and closed
/// in `deinit` (the kernel frees the array once no program holds it either).
public final class LiveFramePoolMap: @unchecked Sendable {
    public let fd: Int32
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let capacity: Int

    init(fd: Int32, base: UnsafeMutableRawPointer, length: Int, capacity: Int) {
        self.fd = fd
        self.base = base
        self.length = length
        self.capacity = capacity
    }

    deinit {
        munmap(base, length)
        close(fd)
    }
}
