import CLibXDP
import CNUMA
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A UMEM: the frame memory an AF_XDP socket shares with the kernel, registered once and
/// divided into `frameCount` frames of `frameSize` bytes (aligned mode: a frame's address
/// is its byte offset from `base`, a multiple of `frameSize`).
///
/// Memory: an anonymous private mapping, optionally of huge pages, optionally bound to a NUMA
/// node before its pages are touched, and prefaulted. The kernel pins it while registered.
/// `deinit` deletes the libxdp UMEM and then unmaps. Sockets hold a strong reference, so a
/// Umem outlives every socket bound to it.
///
/// The fill and completion rings created here belong to the first socket bound to this
/// Umem (libxdp's rule). They are mapped until that socket is deleted. Later sockets on the
/// same Umem (another interface or queue) get fill and completion rings of their own.
public final class Umem: @unchecked Sendable {
    public let frameCount: Int
    public let frameSize: Int
    /// Start of the frame memory; frame `i` is at `base + i * frameSize`.
    public let base: UnsafeMutableRawPointer
    /// Bytes mapped (frameCount × frameSize, rounded up to the page or huge page size).
    public let mappedLength: Int
    /// Whether the mapping got huge pages (asked for and available).
    public let usesHugePages: Bool
    /// The NUMA node the memory is bound to, if one was asked for.
    public let numaNode: Int?
    public let fillRingSize: UInt32
    public let completionRingSize: UInt32
    /// Fill ring (we produce free frames, the kernel consumes them to receive into).
    public let fill: UnsafeMutablePointer<xsk_ring_prod>
    /// Completion ring (the kernel produces frames it has finished transmitting).
    public let completion: UnsafeMutablePointer<xsk_ring_cons>

    /// libxdp's `struct xsk_umem *`.
    let handle: OpaquePointer
    /// One allocation holding `fill` and `completion`, each on a cache line of its own.
    private let ringStorage: UnsafeMutableRawPointer

    /// Socket bookkeeping, used only while creating and deleting sockets. libxdp's UMEM
    /// reference count and context list are not thread-safe; this lock serialises them.
    struct Bindings {
        /// (ifindex, queue) pairs with a live socket on this Umem.
        var live: [(ifindex: UInt32, queue: UInt32)] = []
        /// A first socket was created: the Umem's own fd is bound and its rings handed over.
        var firstSocketCreated = false
        /// The first socket's need_wakeup setting, which later sockets inherit.
        var firstNeedsWakeup = false
    }
    let bindings = Mutex(Bindings())

    /// - Parameters:
    ///   - frameCount: number of frames.
    ///   - frameSize: bytes per frame, a power of two ≥ 2048 (the kernel's minimum chunk) and
    ///     ≤ the page size unless huge pages are used.
    ///   - fillRingSize, completionRingSize: entries, powers of two.
    ///   - numaNode: bind the memory to this node (the NIC's node) before it is touched.
    ///   - hugePages: try 2 MiB pages first and fall back to normal pages when none are reserved.
    public init(frameCount: Int, frameSize: Int = 2048, fillRingSize: UInt32, completionRingSize: UInt32,
                numaNode: Int?, hugePages: Bool = false) throws(XDPError) {
        guard frameCount > 0 else {
            throw XDPError("create UMEM", code: EINVAL, detail: "frameCount must be positive, got \(frameCount)")
        }
        guard frameSize >= 2048, frameSize & (frameSize - 1) == 0 else {
            throw XDPError("create UMEM", code: EINVAL, detail: "frameSize must be a power of two ≥ 2048, got \(frameSize)")
        }
        for (name, size) in [("fill", fillRingSize), ("completion", completionRingSize)]
        where size == 0 || size & (size - 1) != 0 {
            throw XDPError("create UMEM", code: EINVAL, detail: "\(name) ring size must be a power of two, got \(size)")
        }
        let (length, overflow) = frameCount.multipliedReportingOverflow(by: frameSize)
        guard !overflow else {
            throw XDPError("create UMEM", code: EINVAL, detail: "\(frameCount) × \(frameSize) bytes overflows")
        }
        if let numaNode {
            // libnuma reports -1 on a kernel without NUMA; node 0 is then simply all memory.
            if numa_available() < 0 {
                guard numaNode == 0 else {
                    throw XDPError("bind UMEM to NUMA node \(numaNode)", code: EINVAL,
                                   detail: "this kernel has no NUMA support (only node 0 exists)")
                }
            } else if numaNode < 0 || numaNode > Int(numa_max_node()) {
                throw XDPError("bind UMEM to NUMA node \(numaNode)", code: EINVAL,
                               detail: "nodes are 0...\(numa_max_node())")
            }
        }

        // Map. With a node to bind to, do not populate yet: pages faulted in now would be
        // placed by the default policy and the binding would not move them.
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let hugePageSize = 2 << 20
        var flags = MAP_PRIVATE | MAP_ANONYMOUS
        if numaNode == nil { flags |= MAP_POPULATE }
        var mapped: UnsafeMutableRawPointer?
        var mappedLength = 0
        var gotHugePages = false
        if hugePages {
            mappedLength = (length + hugePageSize - 1) / hugePageSize * hugePageSize
            let p = mmap(nil, mappedLength, PROT_READ | PROT_WRITE, flags | MAP_HUGETLB, -1, 0)
            if p != MAP_FAILED, let p {
                mapped = p
                gotHugePages = true
            }
            // Otherwise (typically ENOMEM: no huge pages reserved) fall back to normal pages.
        }
        if mapped == nil {
            mappedLength = (length + pageSize - 1) / pageSize * pageSize
            let p = mmap(nil, mappedLength, PROT_READ | PROT_WRITE, flags, -1, 0)
            guard p != MAP_FAILED, let p else {
                throw XDPError("mmap UMEM (\(mappedLength) bytes)", code: errno)
            }
            mapped = p
        }
        let base = mapped!

        if let numaNode, numa_available() >= 0 {
            // MPOL_BIND for this range, then fault every page in under that policy.
            numa_tonode_memory(base, mappedLength, Int32(numaNode))
        }
        if let numaNode, madvise(base, mappedLength, MADV_POPULATE_WRITE) != 0 {
            let code = errno
            guard code == EINVAL else {
                // Typically ENOMEM: the node has not that much free memory.
                munmap(base, mappedLength)
                throw XDPError("populate UMEM (\(mappedLength) bytes) on NUMA node \(numaNode)", code: code)
            }
            // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch one byte a page instead.
            var offset = 0
            while offset < mappedLength {
                base.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
                offset += gotHugePages ? hugePageSize : pageSize
            }
        }

        // The rings' bookkeeping structs, each on its own cache line (the worker touches them
        // on every batch; keep them away from whatever malloc puts next to them).
        precondition(MemoryLayout<xsk_ring_prod>.size <= 64 && MemoryLayout<xsk_ring_cons>.size <= 64)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 2 * 64, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * 64)
        let fill = storage.bindMemory(to: xsk_ring_prod.self, capacity: 1)
        let completion = (storage + 64).bindMemory(to: xsk_ring_cons.self, capacity: 1)

        var config = xsk_umem_config(fill_size: fillRingSize, comp_size: completionRingSize,
                                     frame_size: UInt32(frameSize), frame_headroom: 0, flags: 0)
        var handle: OpaquePointer?
        let rc = xsk_umem__create(&handle, base, UInt64(length), fill, completion, &config)
        guard rc == 0, let handle else {
            munmap(base, mappedLength)
            storage.deallocate()
            throw XDPError("xsk_umem__create (\(frameCount) frames × \(frameSize) bytes)", returned: rc)
        }

        self.frameCount = frameCount
        self.frameSize = frameSize
        self.base = base
        self.mappedLength = mappedLength
        self.usesHugePages = gotHugePages
        self.numaNode = numaNode
        self.fillRingSize = fillRingSize
        self.completionRingSize = completionRingSize
        self.fill = fill
        self.completion = completion
        self.handle = handle
        self.ringStorage = storage
    }

    deinit {
        // Every socket holds a strong reference to its Umem, so none is left here and the
        // delete cannot report EBUSY. Unmap only after the kernel's registration is gone.
        let rc = xsk_umem__delete(handle)
        precondition(rc == 0, "xsk_umem__delete: \(XDPError("xsk_umem__delete", returned: rc))")
        munmap(base, mappedLength)
        ringStorage.deallocate()
    }

    /// The address (UMEM offset) of frame `index`, for seeding a `FramePool`.
    @inlinable @inline(__always)
    public func address(ofFrame index: Int) -> UInt64 { UInt64(index &* frameSize) }

    /// Pointer to the byte at a descriptor address. Aligned mode puts no offset in the high
    /// bits and this is `base + address`; the unaligned-mode offset (bits 48...63) is added
    /// anyway, as `xsk_umem__add_offset_to_addr` does, which costs a shift and an add.
    @inlinable @inline(__always)
    public func frame(_ address: UInt64) -> UnsafeMutableRawPointer {
        frames.frame(address)
    }

    /// A plain value with what per-packet code needs to reach frame bytes: copy it into the
    /// worker once and it costs no reference counting afterwards.
    @inlinable
    public var frames: UmemFrames { UmemFrames(base: base, frameSize: frameSize) }
}

/// The frame memory of a Umem as a plain value (a pointer and the frame size).
public struct UmemFrames: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let frameSize: Int

    @inlinable
    public init(base: UnsafeMutableRawPointer, frameSize: Int) {
        self.base = base
        self.frameSize = frameSize
    }

    /// Pointer to the byte at descriptor address `address` (see `Umem.frame`).
    @inlinable @inline(__always)
    public func frame(_ address: UInt64) -> UnsafeMutableRawPointer {
        base + Int(truncatingIfNeeded: xsk_umem__add_offset_to_addr(address))
    }

    /// The address of the start of the frame holding `address` (aligned mode).
    @inlinable @inline(__always)
    public func frameStart(_ address: UInt64) -> UInt64 {
        xsk_umem__extract_addr(address) & ~UInt64(truncatingIfNeeded: frameSize &- 1)
    }
}
