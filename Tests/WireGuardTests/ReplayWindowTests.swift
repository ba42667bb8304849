import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif
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
        let w = ReplayWindow()
        // (#expect cannot take a noncopyable receiver apart: values are read into lets first.)
        do { let v = w.check(Self.reject); #expect(v == .beyondLimit) }
        do { let v = w.check(.max); #expect(v == .beyondLimit) }
        do { let ok = w.commit(Self.windowSize + 100); #expect(ok) }
        do { let v = w.check(Self.windowSize + 100); #expect(v == .duplicate) }
        do { let v = w.check(99); #expect(v == .tooOld) }
        do { let v = w.check(100); #expect(v == .acceptable) }       // exactly windowSize behind the newest
        do { let g = w.greatestCounter; #expect(g == Self.windowSize + 100) }
    }

    @Test func preCheckDoesNotChangeState() {
        let w = ReplayWindow()
        do { let ok = w.mayAccept(5); #expect(ok) }
        do { let ok = w.mayAccept(5); #expect(ok) }
        do { let g = w.greatestCounter; #expect(g == nil) }
        do { let ok = w.commit(5); #expect(ok) }
        do { let ok = w.mayAccept(5); #expect(!ok) }
        do { let ok = w.commit(5); #expect(!ok) }
    }

    /// A jump of more than a whole ring must clear every word: bits from the previous lap
    /// (same slot, different counter) must not read as "seen".
    @Test func longJumpClearsStaleBits() {
        let w = ReplayWindow()
        let bits = UInt64(WireGuardProtocol.replayBitmapWords * 64)   // also the new ring's 256 × 32
        for c in 0..<200 as Range<UInt64> { do { let ok = w.commit(c); #expect(ok) } }
        let far = 10 * bits
        do { let ok = w.commit(far); #expect(ok) }
        for c in (far - 150)..<far { do { let ok = w.mayAccept(c); #expect(ok) }; do { let ok = w.commit(c); #expect(ok) } }
        // Counters one ring apart from committed ones share a slot but are distinct.
        do { let ok = w.commit(far + bits - 64 * 2); #expect(ok) }
        do { let v = w.check(far); #expect(v == .duplicate) }
    }

    @Test func exhaustionAndReset() {
        var w = ReplayWindow()
        do { let e = w.isExhausted; #expect(!e) }
        do { let ok = w.commit(Self.reject - 1); #expect(ok) }
        do { let e = w.isExhausted; #expect(e) }
        w.reset()
        do { let g = w.greatestCounter; #expect(g == nil) }
        do { let ok = w.commit(0); #expect(ok) }
    }
}

/// The kernel's semantics written the obvious way (a set of everything accepted and the
/// greatest counter), to compare the ring against on long random sequences.
struct ReplayModel {
    var accepted = Set<UInt64>()
    var top: UInt64 = 0

    mutating func commit(_ c: UInt64) -> Bool {
        guard c < WireGuardProtocol.rejectAfterMessages,
              UInt64(WireGuardProtocol.replayWindowSize) + c + 1 >= top,
              accepted.insert(c).inserted
        else { return false }
        top = max(top, c + 1)
        return true
    }
}

@Suite struct ReplayWindowModelTests {
    static let windowSize = UInt64(WireGuardProtocol.replayWindowSize)

    /// Drives the window and the model with the same counters; every pre-check and commit must
    /// agree. Returns the number of disagreements (and records the first few).
    static func compare(_ counters: [UInt64], window w: borrowing ReplayWindow, model m: inout ReplayModel,
                        sourceLocation: SourceLocation = #_sourceLocation) {
        var failures = 0
        for (step, c) in counters.enumerated() {
            let pre = w.mayAccept(c)
            let got = w.commit(c)
            let want = m.commit(c)
            if got != want || pre != want {
                failures += 1
                if failures <= 5 {
                    Issue.record("step \(step): counter \(c): pre-check \(pre), commit \(got), model \(want)",
                                 sourceLocation: sourceLocation)
                }
            }
        }
        #expect(failures == 0, sourceLocation: sourceLocation)
        let g = w.greatestCounter
        #expect(g == (m.top == 0 ? nil : m.top - 1), sourceLocation: sourceLocation)
    }

    /// A stream around `start`: mostly forward in small steps, often a little backwards inside
    /// and just outside the window, replays of recent counters, and now and then a jump ahead.
    static func stream(from start: UInt64, count: Int, seed: UInt64, jumps: Bool) -> [UInt64] {
        var rng = SplitMix64(seed: seed)
        var cursor = start
        var out: [UInt64] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            switch UInt64.random(in: 0..<100, using: &rng) {
            case 0..<55: cursor += UInt64.random(in: 1...40, using: &rng); out.append(cursor)
            case 55..<80: out.append(cursor - min(cursor, UInt64.random(in: 0...(windowSize + 300), using: &rng)))
            case 80..<95: out.append(out.isEmpty ? cursor : out[out.count - 1 - Int.random(in: 0..<min(out.count, 64), using: &rng)])
            case 95..<99: cursor += UInt64.random(in: 1000...20_000, using: &rng); out.append(cursor)
            default:
                if jumps { cursor += UInt64.random(in: 1...(1 << 40), using: &rng) } else { cursor += 1 }
                out.append(cursor)
            }
        }
        return out
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func agreesWithTheModelOnRandomStreams(seed: UInt64) {
        let w = ReplayWindow()
        var m = ReplayModel()
        Self.compare(Self.stream(from: 0, count: 60_000, seed: seed, jumps: true), window: w, model: &m)
    }

    /// The tags are the word number (counter >> 5) truncated to 32 bits: they wrap from
    /// 0xffffffff to 0 at counter 2^37. A stream that crosses it must behave as the model.
    @Test func tagWrapBoundary() {
        let wrap: UInt64 = 1 << 37
        let w = ReplayWindow()
        var m = ReplayModel()
        Self.compare(Self.stream(from: wrap - 3 * 8192, count: 4000, seed: 7, jumps: false), window: w, model: &m)
        // Exactly at the boundary: the last word before the wrap (tag 0xffffffff, slot 255) and
        // the first after it (tag 0, slot 0, a slot still holding words of earlier laps).
        let w2 = ReplayWindow()
        var m2 = ReplayModel()
        Self.compare([wrap - 40, wrap - 1, wrap, wrap + 31, wrap - 1, wrap, wrap + 32, wrap - 33,
                      wrap + 8128 - 33, wrap - 33, wrap - 32, wrap - 31, wrap + 8128, wrap - 1, wrap],
                     window: w2, model: &m2)
        do { let v = w2.check(wrap); #expect(v == .duplicate) }
        do { let v = w2.check(wrap - 1); #expect(v == .tooOld) }
    }

    /// The one known difference from the kernel, written down: a slot left untouched while the
    /// counter jumps exactly a multiple of 2^37 ahead has the same 32-bit tag as the new word,
    /// so its stale bits read as seen. That rejects a fresh counter; it never accepts one twice.
    @Test func exactLapAliasingOnlyRejects() {
        let lap: UInt64 = 1 << 37
        let w = ReplayWindow()
        do { let ok = w.commit(5); #expect(ok) }
        do { let ok = w.commit(lap + 200 * 32); #expect(ok) }     // slot 200; slot 0 still holds word 0
        do { let v = w.check(lap + 5); #expect(v == .duplicate) } // the kernel would accept it
        do { let ok = w.commit(lap + 5); #expect(!ok) }
        do { let ok = w.commit(lap + 6); #expect(ok) }            // same slot, fresh bit: taken once
        do { let ok = w.commit(lap + 6); #expect(!ok) }
        do { let ok = w.commit(5); #expect(!ok) }                 // the old counter is far too old
    }

    /// A jump across most of the counter space (the kernel selftest's jump to
    /// REJECT_AFTER_MESSAGES − 1), then a stream there.
    @Test func streamNearTheMessageLimit() {
        let w = ReplayWindow()
        var m = ReplayModel()
        let reject = WireGuardProtocol.rejectAfterMessages
        Self.compare([0, 1, 100_000] + Self.stream(from: reject - 1_000_000, count: 1000, seed: 11, jumps: false)
                     .map { min($0, reject + 5) }, window: w, model: &m)
    }
}

/// Several threads commit into one window at once, as workers on several NIC queues do.
@Suite struct ReplayWindowConcurrencyTests {
    final class Shared: @unchecked Sendable {
        let window = ReplayWindow()
        /// Blocks each thread has finished; a thread waits before running too far ahead.
        let progress = InlineArray<4, Atomic<Int>> { _ in Atomic(0) }
        let started = Atomic<Int>(0)
        /// Counters each thread had accepted; thread t writes only `accepted[t]`, read after join.
        var accepted: [[UInt64]]
        var lateAccepted: [[UInt64]]
        init(threads: Int) {
            accepted = Array(repeating: [], count: threads)
            lateAccepted = Array(repeating: [], count: threads)
        }
    }

    static let blockSize: UInt64 = 256
    static let blocks = 2048                   // 524,288 counters: the 256-slot ring turns 8 times
    static let maxSkew = 8                     // blocks: (8 + 1) × 256 = 2304 < 8128
    static let holeAge = 40                    // blocks: holes are offered 40 × 256 = 10,240 late

    /// Counters with this property are left out of the main pass and offered only when they are
    /// far outside the window: none may be accepted.
    static func isHole(_ c: UInt64) -> Bool { c % 61 == 13 }

    /// Every counter is offered by exactly two of the `threads` threads: c by thread c % n and
    /// the next one (with two threads: both).
    static func offers(_ c: UInt64, thread t: Int, threads n: Int) -> Bool {
        let first = Int(c % UInt64(n))
        return t == first || t == (first + 1) % n
    }

    static func worker(_ s: Shared, thread t: Int, threads n: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed &* 1000 &+ UInt64(t))
        var mine: [UInt64] = []
        var late: [UInt64] = []
        var block: [UInt64] = []
        s.started.add(1, ordering: .relaxed)
        while s.started.load(ordering: .relaxed) < n { sched_yield() }
        for b in 0..<blocks {
            // Bounded skew: every thread has finished block b - maxSkew. So while any thread
            // offers a counter of block b, nothing beyond block b + maxSkew was committed, and
            // the first offer of every counter lies inside the window.
            for other in 0..<n where other != t {
                while s.progress[other].load(ordering: .acquiring) < b - maxSkew { sched_yield() }
            }
            block.removeAll(keepingCapacity: true)
            for c in UInt64(b) * blockSize..<UInt64(b + 1) * blockSize
            where !isHole(c) && offers(c, thread: t, threads: n) { block.append(c) }
            block.shuffle(using: &rng)
            for c in block where s.window.commit(c) { mine.append(c) }
            // Holes of an old block: this thread has seen top pass its own block b (it committed
            // those counters or saw another thread's commit of them), so they are too old.
            if b >= holeAge {
                let old = UInt64(b - holeAge) * blockSize
                for c in old..<old + blockSize where isHole(c) && offers(c, thread: t, threads: n) {
                    if s.window.commit(c) { late.append(c) }
                }
            }
            s.progress[t].store(b + 1, ordering: .releasing)
        }
        s.accepted[t] = mine
        s.lateAccepted[t] = late
    }

    @Test(arguments: [2, 3, 4])
    func everyCounterAcceptedExactlyOnce(threads n: Int) throws {
        for round in 0..<2 {
            let s = Shared(threads: n)
            try runThreads(n) { t in Self.worker(s, thread: t, threads: n, seed: UInt64(round * 10 + n)) }
            let total = UInt64(Self.blocks) * Self.blockSize
            var count = [UInt8](repeating: 0, count: Int(total))
            for list in s.accepted { for c in list { count[Int(c)] &+= 1 } }
            var wrong = 0
            for c in 0..<total where count[Int(c)] != (Self.isHole(c) ? 0 : 1) {
                wrong += 1
                if wrong <= 5 { Issue.record("\(n) threads, round \(round): counter \(c) accepted \(count[Int(c)]) times") }
            }
            #expect(wrong == 0, "\(n) threads, round \(round)")
            let late = s.lateAccepted.flatMap { $0 }
            #expect(late.isEmpty, "\(n) threads: counters outside the window were accepted: \(late.prefix(5))")
            var last = total - 1
            while Self.isHole(last) { last -= 1 }
            let g = s.window.greatestCounter
            #expect(g == last)
        }
    }

    /// Two threads offer the same counters in the same order, as closely in step as they can:
    /// maximum contention on the same slots and on top.
    @Test func lockstepDuplicatesAcceptedOnce() throws {
        let s = Shared(threads: 2)
        let total: UInt64 = 200_000
        try runThreads(2) { t in
            var mine: [UInt64] = []
            s.started.add(1, ordering: .relaxed)
            while s.started.load(ordering: .relaxed) < 2 { sched_yield() }
            for c in 0..<total where s.window.commit(c) { mine.append(c) }
            s.accepted[t] = mine
        }
        let a = Set(s.accepted[0]), b = Set(s.accepted[1])
        let acceptedTwice = a.intersection(b).count
        #expect(acceptedTwice == 0)
        #expect(a.count + b.count == Int(total))
    }
}

/// Runs `body(0..<n)` on `n` POSIX threads at once and joins them all.
func runThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) throws {
    final class Start: @unchecked Sendable {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    var threads: [pthread_t] = []
    for t in 0..<n {
        let context = Unmanaged.passRetained(Start { body(t) }).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<Start>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<Start>.fromOpaque(context).release()
            for started in threads { pthread_join(started, nil) }
            throw ThreadStartFailed(message: "pthread_create: \(String(cString: strerror(rc)))")
        }
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

struct ThreadStartFailed: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
