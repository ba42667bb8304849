import Testing
@testable import WireGuard

/// Known-answer tests after the kernel's selftest (drivers/net/wireguard/selftest/counter.c):
/// the same sequences, rewritten as tables from counter_validate's logic.
@Suite struct ReplayWindowTests {
    static let windowSize = UInt64(WireGuardProtocol.replayWindowSize)   // COUNTER_WINDOW_SIZE
    static let limit = windowSize + 1                                      // T_LIM
    static let reject = WireGuardProtocol.rejectAfterMessages

    /// Runs `counter_validate` (pre-check, then commit) over a table; reports the first
    /// mismatch by its 1-based step number, as the kernel's selftest does.
    static func run(_ window: inout ReplayWindow, _ table: [(UInt64, Bool)],
                    sourceLocation: SourceLocation = #_sourceLocation) {
        for (step, (counter, expected)) in table.enumerated() {
            let pre = window.mayAccept(counter)
            let got = window.commit(counter)
            #expect(got == expected, "step \(step + 1): counter \(counter)", sourceLocation: sourceLocation)
            // The pre-check must agree with the commit on a window that did not change between.
            #expect(pre == expected, "pre-check, step \(step + 1): counter \(counter)", sourceLocation: sourceLocation)
        }
    }

    @Test func kernelSelftestSequence() {
        let L = Self.limit, R = Self.reject
        let table: [(UInt64, Bool)] = [
            (0, true), (1, true), (1, false), (9, true), (8, true), (7, true), (7, false),         // 1–7
            (L, true), (L - 1, true), (L - 1, false), (L - 2, true), (2, true), (2, false),       // 8–13
            (L + 16, true), (3, false), (L + 16, false), (L * 4, true),                           // 14–17
            (L * 4 - (L - 1), true), (10, false), (L * 4 - L, false),                             // 18–20
            (L * 4 - (L + 1), false), (L * 4 - (L - 2), true), (L * 4 + 1 - L, false), (0, false),// 21–24
            (R, false), (R - 1, true), (R, false), (R - 1, false), (R - 2, true),                 // 25–29
            (R + 1, false), (R + 2, false), (R - 2, false), (R - 3, true), (0, false),            // 30–34
        ]
        var w = ReplayWindow()
        Self.run(&w, table)
    }

    @Test func fillWindowAscendingThenZeroFits() {
        var w = ReplayWindow()
        Self.run(&w, (1...Self.windowSize).map { ($0, true) } + [(0, true), (0, false)])
    }

    @Test func fillWindowFromTwoThenOneFitsZeroDoesNot() {
        var w = ReplayWindow()
        Self.run(&w, (2...(Self.windowSize + 1)).map { ($0, true) } + [(1, true), (0, false)])
    }

    @Test func descendingFullWindow() {
        var w = ReplayWindow()
        Self.run(&w, (0...Self.windowSize).reversed().map { ($0, true) })
    }

    @Test func descendingFromWindowPlusOneThenZeroTooOld() {
        var w = ReplayWindow()
        Self.run(&w, (1...(Self.windowSize + 1)).reversed().map { ($0, true) } + [(0, false)])
    }

    @Test func descendingThenTopThenZero() {
        var w = ReplayWindow()
        Self.run(&w, (1...Self.windowSize).reversed().map { ($0, true) }
                     + [(Self.windowSize + 1, true), (0, false)])
    }

    @Test func descendingThenZeroThenTop() {
        var w = ReplayWindow()
        Self.run(&w, (1...Self.windowSize).reversed().map { ($0, true) }
                     + [(0, true), (Self.windowSize + 1, true)])
    }

    @Test func verdictsAreNamed() {
        var w = ReplayWindow()
        #expect(w.check(Self.reject) == .beyondLimit)
        #expect(w.check(.max) == .beyondLimit)
        do { let ok = w.commit(Self.windowSize + 100); #expect(ok) }
        #expect(w.check(Self.windowSize + 100) == .duplicate)
        #expect(w.check(99) == .tooOld)
        #expect(w.check(100) == .acceptable)       // exactly windowSize behind the newest
        #expect(w.greatestCounter == Self.windowSize + 100)
    }

    @Test func preCheckDoesNotChangeState() {
        var w = ReplayWindow()
        #expect(w.mayAccept(5))
        #expect(w.mayAccept(5))
        #expect(w.greatestCounter == nil)
        do { let ok = w.commit(5); #expect(ok) }
        #expect(!w.mayAccept(5))
        do { let ok = w.commit(5); #expect(!ok) }
    }

    /// A jump of more than a whole ring must clear every word: bits from the previous lap
    /// (same slot, different counter) must not read as "seen".
    @Test func longJumpClearsStaleBits() {
        var w = ReplayWindow()
        let bits = UInt64(WireGuardProtocol.replayBitmapWords * 64)
        for c in 0..<200 as Range<UInt64> { do { let ok = w.commit(c); #expect(ok) } }
        let far = 10 * bits
        do { let ok = w.commit(far); #expect(ok) }
        for c in (far - 150)..<far { #expect(w.mayAccept(c)); do { let ok = w.commit(c); #expect(ok) } }
        // Counters one ring apart from committed ones share a slot but are distinct.
        do { let ok = w.commit(far + bits - 64 * 2); #expect(ok) }
        #expect(w.check(far) == .duplicate)
    }

    @Test func exhaustionAndReset() {
        var w = ReplayWindow()
        #expect(!w.isExhausted)
        do { let ok = w.commit(Self.reject - 1); #expect(ok) }
        #expect(w.isExhausted)
        w.reset()
        #expect(w.greatestCounter == nil)
        do { let ok = w.commit(0); #expect(ok) }
    }
}
