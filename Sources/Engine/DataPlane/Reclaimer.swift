import Synchronization
import WireGuard

/// Quiescent-state-based reclamation: how the control plane frees what workers may still be
/// reading, without workers taking locks or reference counts.
///
/// Workers read published pointers (keypairs, outer-header templates) with plain atomic
/// loads and never hold them across batches. Each worker announces, at the top of every
/// loop iteration, the global epoch it has seen (`WorkerEpochs.announce`): from then on it
/// holds no pointer read before. The control plane unpublishes a pointer, then retires it
/// with the epoch current at that moment, advancing the epoch; the pointer is released once
/// every worker has announced a later epoch, or is parked (sleeping in poll with nothing
/// held). Retirement is rare (a handshake every two minutes per peer), so the list is short.
public final class WorkerEpochs: @unchecked Sendable {
    /// Announced by a worker that holds nothing (asleep, or stopped).
    public static let parked = UInt64.max

    private let global = Atomic<UInt64>(1)
    private let announced: UnsafeMutablePointer<Atomic<UInt64>>
    public let workerCount: Int

    public init(workerCount: Int) {
        self.workerCount = workerCount
        announced = .allocate(capacity: max(workerCount, 1))
        for i in 0..<max(workerCount, 1) { (announced + i).initialize(to: Atomic(WorkerEpochs.parked)) }
    }

    deinit {
        announced.deinitialize(count: max(workerCount, 1))
        announced.deallocate()
    }

    /// Worker `index` holds nothing read before now. Release: the worker's earlier reads
    /// happen before the control plane sees the announcement and frees.
    @inline(__always)
    public func announce(worker index: Int) {
        announced[index].store(global.load(ordering: .acquiring), ordering: .releasing)
    }

    /// Worker `index` is about to sleep or stop, holding nothing.
    @inline(__always)
    public func park(worker index: Int) {
        announced[index].store(WorkerEpochs.parked, ordering: .releasing)
    }

    /// Control plane: the epoch to stamp on something just unpublished; advances the epoch.
    func retireEpoch() -> UInt64 {
        global.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
    }

    /// True when every worker announced an epoch after `epoch` (or is parked).
    func isQuiescent(since epoch: UInt64) -> Bool {
        for i in 0..<workerCount where announced[i].load(ordering: .acquiring) <= epoch {
            return false
        }
        return true
    }
}

/// What the control plane retires: a published keypair reference or a raw allocation.
public enum Retired {
    /// A keypair entry unpublished from the keypair table (and no peer's sending slot).
    case keypairEntry(UnsafeMutablePointer<KeypairEntry>)
    /// An allocation no longer published (an outer header template).
    case memory(UnsafeMutableRawPointer)
    /// A tenant route replaced or removed (it owns its AllowedIPs table).
    case tenantRoute(UnsafeMutablePointer<TenantRoute>)
    /// A peer handle whose peer was removed: once no worker can hold it, its slot is cleared
    /// and `reuse` gives the handle back.
    case peerHandle(UInt32, PeerTable, reuse: (UInt32) -> Void)

    func release() {
        switch self {
        case .keypairEntry(let p): KeypairEntry.destroy(p)
        case .memory(let p): p.deallocate()
        case .tenantRoute(let p):
            p.deinitialize(count: 1)
            p.deallocate()
        case .peerHandle(let handle, let table, let reuse):
            table.reset(handle)
            reuse(handle)
        }
    }
}

/// The control plane's list of retired pointers waiting for every worker to move on.
/// Control-plane only (one thread).
public struct Reclaimer {
    public let epochs: WorkerEpochs
    private var pending: [(epoch: UInt64, item: Retired)] = []

    public init(epochs: WorkerEpochs) { self.epochs = epochs }

    public var pendingCount: Int { pending.count }

    /// Call after the pointer is no longer reachable from any published slot.
    public mutating func retire(_ item: Retired) {
        pending.append((epochs.retireEpoch(), item))
    }

    /// Releases whatever no worker can still hold. Call periodically.
    public mutating func collect() {
        guard !pending.isEmpty else { return }
        var kept: [(epoch: UInt64, item: Retired)] = []
        for entry in pending {
            if epochs.isQuiescent(since: entry.epoch) { entry.item.release() } else { kept.append(entry) }
        }
        pending = kept
    }

    /// Releases everything: only when no worker runs any more.
    public mutating func releaseAll() {
        for entry in pending { entry.item.release() }
        pending.removeAll()
    }
}
