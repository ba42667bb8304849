import Synchronization

/// The receive-side anti-replay filter of one keypair, safe to use from any number of threads
/// at once without locks. It accepts exactly what the kernel's `counter_validate`
/// (drivers/net/wireguard/receive.c) accepts: a counter is taken once, and only while it is no
/// more than `WireGuardProtocol.replayWindowSize` (8128) behind the greatest counter taken.
///
/// Layout: `top` (the greatest counter accepted + 1) and a ring of 256 slots, each one atomic
/// 64-bit word holding a 32-bit tag and a 32-bit bitmap:
///
///     slot[(c >> 5) & 255] = tag (c >> 5, truncated to 32 bits) << 32 | bitmap (bit c & 31)
///
/// A slot's bits belong to its tag in the same atomic word, so "replace an old word by a new
/// one" and "set a bit in the current word" are each one compare-and-swap: a thread can never
/// see (or set) a bit under the wrong word, and no slot ever needs clearing. The window spans
/// at most 8128 / 32 + 1 = 255 words, so within the window every word has a slot of its own.
///
/// The rule that makes the tags unambiguous: `commit` raises `top` *before* it writes the slot,
/// and every reader loads the slot (acquiring) *before* it loads `top`. So a reader that finds
/// a slot written for counter w also finds top > w; once it has checked that its counter c is
/// not too old against that top, the slot's word cannot be newer than c's (it is at most 254
/// words ahead of c and shares c's slot, so it is c's word or a multiple of 256 words behind).
/// A slot whose tag differs from c's is therefore an old word that c may replace, even across
/// the 32-bit wrap of the tags, with no wrapping comparison needed.
///
/// What 32-bit tags cannot tell apart is a slot left untouched while the counter moved exactly
/// a multiple of 2^32 words (2^37 counters) ahead: its stale bits then read as the new word's,
/// which can only turn an acceptance into a rejection, never accept a counter twice. Honest
/// senders never get near: a keypair lives at most 180 s, and 2^37 counters in that time is
/// 760 million packets a second for one peer.
///
/// The check is split in two because the data plane decrypts in between:
/// `check`/`mayAccept` is a cheap read-only filter run before decryption (so a flood of
/// replays costs no ChaCha20), and `commit` records the counter after the tag verified (so a
/// forged message can never move the window). `commit` decides again, atomically, because two
/// copies of one message may pass the pre-check at the same time on two workers: exactly one
/// of their commits succeeds.
///
/// Noncopyable, because atomics need a stable address: a `Keypair` keeps its window inside the
/// one heap block it allocates at init; the per-packet operations allocate nothing.
public struct ReplayWindow: ~Copyable, Sendable {
    static let slotBits: UInt64 = 32
    static let slotCount = 256
    static let slotMask = UInt64(slotCount - 1)
    static let windowSize = UInt64(WireGuardProtocol.replayWindowSize)

    /// One more than the greatest counter committed so far (0 when none), as the kernel keeps
    /// it: storing `counter + 1` lets 0 mean "nothing received" and counter 0 be accepted.
    /// Only ever raised (a compare-and-swap max).
    private let top = Atomic<UInt64>(0)
    private let slots = InlineArray<256, Atomic<UInt64>> { _ in Atomic(0) }

    public init() {
        // The window's words must fit the ring with no two sharing a slot.
        assert(ReplayWindow.windowSize % ReplayWindow.slotBits == 0
               && Int(ReplayWindow.windowSize / ReplayWindow.slotBits) + 1 <= ReplayWindow.slotCount)
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

    @inline(__always)
    static func isTooOld(_ counter: UInt64, top: UInt64) -> Bool {
        // counter + 1 cannot overflow: counters at or beyond REJECT_AFTER_MESSAGES never get here.
        windowSize &+ counter &+ 1 < top
    }

    /// Read-only pre-check, run before decryption. Never changes state. From any thread; the
    /// answer may be stale by the time the caller acts on it, which `commit` settles.
    @inline(__always)
    public func check(_ counter: UInt64) -> Verdict {
        if counter >= WireGuardProtocol.rejectAfterMessages { return .beyondLimit }
        let word = counter >> 5
        // Slot first, then top (see the type's comment): top then covers the slot's writer.
        let slot = slots[Int(word & ReplayWindow.slotMask)].load(ordering: .acquiring)
        let top = self.top.load(ordering: .relaxed)
        if top >= WireGuardProtocol.rejectAfterMessages &+ 1 { return .beyondLimit }
        if ReplayWindow.isTooOld(counter, top: top) { return .tooOld }
        let sameWord = UInt32(truncatingIfNeeded: slot >> 32) == UInt32(truncatingIfNeeded: word)
        let bit = UInt64(1) << (counter & (ReplayWindow.slotBits - 1))
        return sameWord && slot & bit != 0 ? .duplicate : .acceptable
    }

    /// True when `counter` would be accepted by `commit` now.
    @inline(__always)
    public func mayAccept(_ counter: UInt64) -> Bool { check(counter) == .acceptable }

    /// Records `counter` as received. Returns false (and records nothing) when it is a
    /// replay, too old, or at/beyond REJECT_AFTER_MESSAGES. Call only after the message
    /// authenticated. From any thread: of concurrent commits of one counter exactly one wins.
    @inline(__always)
    public func commit(_ counter: UInt64) -> Bool {
        if counter >= WireGuardProtocol.rejectAfterMessages { return false }
        // Raise top first (a CAS max), so that whoever sees our slot write also sees top > counter.
        // Raising it for a counter that then turns out to be a replay changes nothing: the
        // first commit of that counter raised it already. The message authenticated, so its
        // counter is one the peer really sent, as the kernel's window assumes too.
        var top = self.top.load(ordering: .relaxed)
        while true {
            if ReplayWindow.isTooOld(counter, top: top) { return false }
            if counter < top { break }
            let (exchanged, current) = self.top.weakCompareExchange(
                expected: top, desired: counter &+ 1, ordering: .relaxed)
            if exchanged { break }
            top = current
        }

        let word = counter >> 5
        let tag = UInt64(UInt32(truncatingIfNeeded: word)) << 32
        let bit = UInt64(1) << (counter & (ReplayWindow.slotBits - 1))
        let index = Int(word & ReplayWindow.slotMask)
        var seen = slots[index].load(ordering: .acquiring)
        while true {
            // The slot's writer raised top before writing it: judge the counter against that top,
            // so that the slot's word is known to be ours or older (see the type's comment).
            if ReplayWindow.isTooOld(counter, top: self.top.load(ordering: .relaxed)) { return false }
            let desired: UInt64
            if seen & 0xffff_ffff_0000_0000 == tag {
                if seen & bit != 0 { return false }                       // replayed
                desired = seen | bit
            } else {
                desired = tag | bit                                        // an older word: replace it
            }
            // Releasing publishes the raised top with the slot; acquiring (also on failure)
            // makes the next round's top load cover the writer of the value found.
            let (exchanged, current) = slots[index].compareExchange(
                expected: seen, desired: desired,
                successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
            if exchanged { return true }
            seen = current
        }
    }

    /// The greatest counter committed so far, or nil when none.
    public var greatestCounter: UInt64? {
        let top = self.top.load(ordering: .relaxed)
        return top == 0 ? nil : top - 1
    }

    /// True once the peer used counter REJECT_AFTER_MESSAGES − 1: the keypair can receive
    /// nothing more (the kernel's decrypt_packet invalidates it at this point).
    public var isExhausted: Bool { top.load(ordering: .relaxed) >= WireGuardProtocol.rejectAfterMessages }

    /// Back to the state of a fresh keypair. `mutating`, so the caller must own the window
    /// exclusively: no commit can run meanwhile.
    public mutating func reset() {
        top.store(0, ordering: .relaxed)
        for i in 0..<ReplayWindow.slotCount { slots[i].store(0, ordering: .relaxed) }
    }
}
