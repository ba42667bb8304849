import WireGuard

/// When each peer session next needs the control thread: a binary min-heap of (time, session).
///
/// The control loop turns every 10 ms; walking 100,000 peers each turn to find the few whose
/// timers are due cannot keep up. Instead each session is queued at its earliest deadline
/// (`ControlPlane.schedule`) and a turn pops only what is due. Entries are never removed
/// from the middle: a session whose deadline moved earlier is queued again and the older
/// entry goes stale (its time is no longer the session's `scheduled`); a deadline that moved
/// later keeps the earlier entry, which wakes the session once for nothing and queues it at
/// the later time. So a session has one live entry at most, and stale ones are bounded by
/// `compact` (the control plane calls it when the heap outgrows its sessions).
struct WakeupHeap {
    struct Entry {
        var time: Instant
        var session: PeerSession
    }

    private(set) var entries: [Entry] = []

    var count: Int { entries.count }

    mutating func push(_ time: Instant, _ session: PeerSession) {
        entries.append(Entry(time: time, session: session))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].time < entries[parent].time else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(_ now: Instant) -> Entry? {
        guard let first = entries.first, first.time <= now else { return nil }
        let last = entries.removeLast()
        guard !entries.isEmpty else { return first }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].time < entries[smallest].time { smallest = left }
            if right < entries.count && entries[right].time < entries[smallest].time { smallest = right }
            guard smallest != parent else { break }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
        return first
    }

    /// Rebuilds the heap from the sessions' own `scheduled` times, dropping stale entries.
    mutating func compact(_ sessions: some Sequence<PeerSession>) {
        entries.removeAll(keepingCapacity: true)
        for session in sessions {
            if let time = session.scheduled { push(time, session) }
        }
    }
}
