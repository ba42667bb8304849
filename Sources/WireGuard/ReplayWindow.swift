/// The receive-side anti-replay filter of one keypair: an RFC 6479 sliding bitmap with the
/// exact semantics of the kernel's `counter_validate` (drivers/net/wireguard/receive.c).
///
/// The bitmap is `WireGuardProtocol.replayBitmapWords` 64-bit words used as a ring. One word
/// is always kept free (it is the one being cleared as the window slides), so the window
/// covers `WireGuardProtocol.replayWindowSize` (8128) counters behind the newest. Advancing
/// the window clears whole words instead of shifting bits, so the cost of a jump ahead is at
/// most one pass over the ring, however far the jump.
///
/// The storage is inline (an `InlineArray`), so a window costs no allocation of its own; a
/// `Keypair` keeps its window inside the one heap block it allocates at init.
///
/// The check is split in two because the data plane decrypts in between:
/// `check`/`mayAccept` is a cheap read-only filter run before decryption (so a flood of
/// replays costs no ChaCha20), and `commit` records the counter after the tag verified (so a
/// forged message can never move the window). `commit` re-validates, because two copies of
/// the same message may both pass the pre-check inside one batch.
///
/// Not thread-safe: one thread at a time owns a window (the kernel holds a spinlock here;
/// the core takes no locks, so the data plane must keep a keypair's receive side on one
/// worker or serialise access itself).
public struct ReplayWindow: Sendable {
    static let wordBits: UInt64 = 64
    static let wordCount = WireGuardProtocol.replayBitmapWords
    static let bitsTotal = UInt64(wordCount) * wordBits
    static let windowSize = UInt64(WireGuardProtocol.replayWindowSize)
    static let wordMask = UInt64(wordCount - 1)

    /// One more than the greatest counter committed so far (0 when none), as the kernel keeps
    /// it: storing `counter + 1` lets 0 mean "nothing received" and counter 0 be accepted.
    private(set) var top: UInt64 = 0
    private var bitmap = InlineArray<128, UInt64>(repeating: 0)

    public init() {
        assert(ReplayWindow.wordCount == 128 && ReplayWindow.wordCount & (ReplayWindow.wordCount - 1) == 0)
    }

    /// What the pre-check concluded about a counter.
    public enum Verdict: UInt8, Sendable {
        /// New, or inside the window and not seen yet.
        case acceptable
        /// Inside the window and already committed.
        case duplicate
        /// More than `replayWindowSize` behind the newest counter.
        case tooOld
        /// At or beyond REJECT_AFTER_MESSAGES: no honest sender ever uses it.
        case beyondLimit
    }

    /// Read-only pre-check, run before decryption. Never changes state.
    @inline(__always)
    public func check(_ counter: UInt64) -> Verdict {
        if counter >= WireGuardProtocol.rejectAfterMessages || top >= WireGuardProtocol.rejectAfterMessages &+ 1 {
            return .beyondLimit
        }
        let shifted = counter &+ 1                                  // cannot overflow: checked above
        if ReplayWindow.windowSize + shifted < top { return .tooOld }
        if shifted > top { return .acceptable }                    // ahead of everything seen
        let word = bitmap[Int((shifted / ReplayWindow.wordBits) & ReplayWindow.wordMask)]
        return word & (1 << (shifted & (ReplayWindow.wordBits - 1))) == 0 ? .acceptable : .duplicate
    }

    /// True when `counter` would be accepted by `commit` now.
    @inline(__always)
    public func mayAccept(_ counter: UInt64) -> Bool { check(counter) == .acceptable }

    /// Records `counter` as received. Returns false (and leaves the window unchanged) when it
    /// is a replay, too old, or at/beyond REJECT_AFTER_MESSAGES. Call only after the message
    /// authenticated.
    @inline(__always)
    public mutating func commit(_ counter: UInt64) -> Bool {
        if counter >= WireGuardProtocol.rejectAfterMessages || top >= WireGuardProtocol.rejectAfterMessages &+ 1 {
            return false
        }
        let shifted = counter &+ 1
        if ReplayWindow.windowSize + shifted < top { return false }
        let index = shifted / ReplayWindow.wordBits
        if shifted > top {
            // Slide: clear every word between the old top's word and the new one (at most the
            // whole ring), so stale bits from a previous lap never read as "seen".
            let currentIndex = top / ReplayWindow.wordBits
            let steps = min(index - currentIndex, UInt64(ReplayWindow.wordCount))
            var i: UInt64 = 1
            while i <= steps {
                bitmap[Int((currentIndex &+ i) & ReplayWindow.wordMask)] = 0
                i += 1
            }
            top = shifted
        }
        let slot = Int(index & ReplayWindow.wordMask)
        let bit: UInt64 = 1 << (shifted & (ReplayWindow.wordBits - 1))
        let old = bitmap[slot]
        bitmap[slot] = old | bit
        return old & bit == 0
    }

    /// The greatest counter committed so far, or nil when none.
    public var greatestCounter: UInt64? { top == 0 ? nil : top - 1 }

    /// True once the peer used counter REJECT_AFTER_MESSAGES − 1: the keypair can receive
    /// nothing more (the kernel's decrypt_packet invalidates it at this point).
    public var isExhausted: Bool { top >= WireGuardProtocol.rejectAfterMessages }

    /// Back to the state of a fresh keypair.
    public mutating func reset() {
        top = 0
        for i in 0..<ReplayWindow.wordCount { bitmap[i] = 0 }
    }
}
