import Engine
import Gateway
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// N WireGuard peers of one tenant, emulated from one UDP socket, for the perf lab's load
/// generator: a real handshake for every peer per pass (the protocol core's Noise), then
/// valid transport frames made ahead of time (`writeTransportFrames`), which the generator
/// sends at full rate. In the other direction it opens what the gateway sent (`open`).
///
/// Every peer has its own static key (fresh per emulator; the public keys go into the
/// gateway's configuration, the private keys are never printed and are wiped when the
/// emulator goes away) and, after `handshake`, its own keypair whose counters start at 0.
/// All peers share the socket's address and port, so the gateway sees one endpoint with
/// many peers behind it, each known by its key and receiver index.
///
/// Not for concurrent use: one thread at a time (it may move between threads, e.g. into
/// a thread inside a namespace). A keypair is good for 180 s after its handshake (the
/// gateway rejects it afterwards): hand-made frames must be sent within that time.
public final class PeerEmulator: @unchecked Sendable {
    public let peerCount: Int
    /// Peer i's static public key: the `PublicKey` of its `[Peer]` section at the gateway.
    public let publicKeys: [PublicKey]
    private let identities: [StaticIdentity]
    private let presharedKey: PresharedKey
    private let hasPresharedKey: Bool

    /// Per peer, the session with the gateway key of the last `handshake` (none before). Only
    /// its handshake is driven (initiations paced here, not by its timers); its keypair is
    /// copied into `keypairs`.
    private var sessions: [Session] = []
    private var gatewayKey: PublicKey?
    /// Per peer, the greatest TAI64N timestamp sent: each initiation's must be greater.
    private var lastTimestamps: [TAI64N]
    /// The most recent initiation of any peer: the gateway refuses a peer's initiation less
    /// than 1/50 s after its last one, so a new pass waits that long after the previous one.
    private var lastInitiation = Instant.zero

    /// Per peer, the sending and receiving keypair of the last completed handshake.
    var keypairs: [Keypair?]
    /// The local index of peer i is `indexBase &+ i`, random per pass (so a late answer to
    /// a previous pass never matches).
    var indexBase: UInt32 = 0
    /// Where the peers send from and to, as of the last `handshake`.
    public private(set) var local: Endpoint?
    public private(set) var gateway: Endpoint?
    /// The next peer `writeTransportFrames` uses (the round robin goes on across calls).
    var nextPeer = 0

    /// `peerCount` peers with fresh static keys; all share `presharedKey` (nil: none).
    public init(peerCount: Int, presharedKey: PresharedKey? = nil) throws(PeerEmulatorError) {
        guard peerCount >= 1 else { throw PeerEmulatorError("peer emulator: peerCount must be at least 1, not \(peerCount)") }
        self.peerCount = peerCount
        identities = (0..<peerCount).map { _ in StaticIdentity(privateKey: .generate()) }
        publicKeys = identities.map(\.publicKey)
        self.presharedKey = presharedKey ?? .none
        hasPresharedKey = presharedKey != nil
        lastTimestamps = Array(repeating: .zero, count: peerCount)
        keypairs = Array(repeating: nil, count: peerCount)
    }

    /// Sessions without a handshake, for a device that checks no keys and speaks no Noise
    /// (the perf lab's reference forwarder): every peer gets a keypair of zero keys and index
    /// i + 1, the endpoints given. Only unsealed frames (`sealed: false`) make sense with them.
    public func assumeSessions(local: Endpoint, gateway: Endpoint) {
        self.local = local
        self.gateway = gateway
        for i in 0..<peerCount {
            var keys = SessionKeys(sendKey: .zero, receiveKey: .zero, localIndex: UInt32(i + 1), remoteIndex: UInt32(i + 1),
                                   isInitiator: true, createdAt: Engine.Clock.now())
            keypairs[i] = Keypair(consuming: &keys)
        }
    }

    /// Peers whose last handshake completed (and whose keypair has not been dropped since).
    public var establishedCount: Int { keypairs.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }

    /// The `[Peer]` sections of the gateway's configuration for these peers, peer i allowed
    /// `allowedIPs[i]` (a host route each); with the preshared key, if any (the configuration
    /// file is where it must go, like `wg showconf` shows it).
    public func configurationPeers(allowedIPs: [IPAddress]) throws(PeerEmulatorError) -> String {
        guard allowedIPs.count == peerCount else {
            throw PeerEmulatorError("peer emulator: \(allowedIPs.count) AllowedIPs for \(peerCount) peers")
        }
        let psk = hasPresharedKey ? "PresharedKey = \(presharedKey.secret.base64ForDisplay)\n" : ""
        var text = ""
        for i in 0..<peerCount {
            text += "[Peer]\nPublicKey = \(publicKeys[i])\n\(psk)AllowedIPs = \(IPPrefix(host: allowedIPs[i]))\n\n"
        }
        return text
    }

    /// `count` consecutive IPv4 addresses from `first` (inner addresses for the peers).
    public static func consecutiveIPv4(from first: IPAddress, count: Int) throws(PeerEmulatorError) -> [IPAddress] {
        guard case .v4(let a) = first, count >= 0, UInt64(a) + UInt64(count) <= 1 << 32 else {
            throw PeerEmulatorError("peer emulator: \(count) IPv4 addresses from \(first) do not exist")
        }
        return (0..<count).map { .v4(a &+ UInt32($0)) }
    }

    // MARK: Handshake

    /// How `handshake` paces initiations.
    public struct Pacing: Sendable {
        /// Initiations outstanding at most at once. The gateway counts itself "under load"
        /// (and answers with cookie replies) when more than 64 handshake messages wait in one
        /// drain; 32 stays below that.
        public var window = 32
        /// An initiation unanswered this long is sent again (the kernel waits 5 s; a lab
        /// gateway answers in milliseconds).
        public var retryAfter: Duration = .milliseconds(500)
        public init(window: Int = 32, retryAfter: Duration = .milliseconds(500)) {
            self.window = window
            self.retryAfter = retryAfter
        }
    }

    /// What one `handshake` pass did.
    public struct HandshakeReport: Sendable, CustomStringConvertible {
        public var peers: Int
        public var seconds: Double
        public var initiationsSent: Int
        /// Initiations sent again after `retryAfter` without an answer.
        public var retries: Int
        /// Cookie replies received and answered (an initiation with mac2).
        public var cookieReplies: Int
        public var description: String {
            "\(peers) handshakes in \(Int(seconds * 1000)) ms: \(initiationsSent) initiations "
                + "(\(retries) retries, \(cookieReplies) cookie replies)"
        }
    }

    /// A peer's progress in one pass.
    private enum Progress {
        case queued
        case inFlight(since: Instant)
        case done
    }

    /// Why a peer has not completed yet (for the error).
    private enum Trouble: CustomStringConvertible {
        case noAnswer
        case responseRejected(HandshakeError)
        case cookieRejected(HandshakeError)
        case initiationFailed(HandshakeError)
        var description: String {
            switch self {
            case .noAnswer: "no answer to any initiation (lost, rate limited, or refused by the gateway: see its handshake failures)"
            case .responseRejected(let e): "response rejected (\(e))"
            case .cookieRejected(let e): "cookie reply rejected (\(e))"
            case .initiationFailed(let e): "initiation could not be made (\(e))"
            }
        }
    }

    /// Completes a handshake for every peer as initiator, through `socket` with the gateway's
    /// tenant at `gateway` (its IPv4 address and listen port) whose public key is
    /// `gatewayPublicKey`. Afterwards every peer has a fresh keypair whose counters start at 0
    /// (the keypairs of an earlier pass are dropped when it starts).
    ///
    /// Initiations go out in a window of `pacing.window`; each response completes a peer and
    /// lets the next initiation go. A cookie reply (the gateway is under load) is consumed
    /// and the initiation sent again at once with mac2; an initiation unanswered for
    /// `pacing.retryAfter` (lost, or refused by the gateway's per-source rate limit, which
    /// every peer here shares) is sent again with a new ephemeral key and a newer timestamp,
    /// as a real peer would. Either halves the window, at most once per `retryAfter`, and
    /// caps it there for the rest of the pass; it grows back by one per completed handshake
    /// up to that cap.
    ///
    /// Throws when `timeout` passes first: the error says how many peers completed and why
    /// the others did not; the peers that completed keep their keypairs.
    @discardableResult
    public func handshake(over socket: PeerSocket, gateway: Endpoint, gatewayPublicKey: PublicKey,
                          timeout: Duration = .seconds(60),
                          pacing: Pacing = Pacing()) throws(PeerEmulatorError) -> HandshakeReport {
        guard gateway.address.isV4 else {
            throw PeerEmulatorError("peer emulator: the gateway endpoint \(gateway) is not IPv4")
        }
        guard pacing.window >= 1 else { throw PeerEmulatorError("peer emulator: pacing window must be at least 1") }
        if gatewayKey != gatewayPublicKey {
            sessions = identities.map {
                Session(handshake: PeerHandshake(identity: $0, remoteStatic: gatewayPublicKey, presharedKey: presharedKey))
            }
            gatewayKey = gatewayPublicKey
        }
        local = socket.local
        self.gateway = gateway
        keypairs = Array(repeating: nil, count: peerCount)
        nextPeer = 0
        withUnsafeMutableBytes(of: &indexBase) { systemRandomBytes($0) }

        // The gateway refuses an initiation from a peer less than 20 ms after its last one.
        let earliest = lastInitiation + PeerHandshake.minimumInitiationInterval + .milliseconds(5)
        while Engine.Clock.now() < earliest { usleepMilliseconds(1) }

        let start = Engine.Clock.now()
        let deadline = start + timeout
        var progress = [Progress](repeating: .queued, count: peerCount)
        var trouble = [Trouble?](repeating: nil, count: peerCount)
        // Peers waiting to send, in order; retried peers go to the back, cookie-answered ones
        // to the front (the gateway is waiting for their mac2).
        var queue = Deque(0..<peerCount)
        var inFlight: [Int] = []
        var window = pacing.window
        // The window never grows past the ceiling again once a loss lowered it: what made the
        // gateway answer with cookies (or not at all) would do it again.
        var ceiling = pacing.window
        var lastDecrease = Instant.zero
        var completed = 0
        var report = HandshakeReport(peers: peerCount, seconds: 0, initiationsSent: 0, retries: 0, cookieReplies: 0)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
        defer { buffer.deallocate() }

        func shrinkWindow(_ now: Instant) {
            // Once per retry period at most: the cookie replies and timeouts of one burst are
            // one signal (halving on each would collapse the window to 1).
            guard lastDecrease == .zero || now.since(lastDecrease) >= pacing.retryAfter else { return }
            ceiling = max(1, window / 2)
            window = ceiling
            lastDecrease = now
        }

        while completed < peerCount {
            var now = Engine.Clock.now()
            guard now < deadline else { break }

            // Initiations that waited too long go back in the queue.
            inFlight.removeAll { i in
                guard case .inFlight(let since) = progress[i], now.since(since) >= pacing.retryAfter else { return false }
                progress[i] = .queued
                if trouble[i] == nil { trouble[i] = .noAnswer }
                queue.pushBack(i)
                report.retries += 1
                shrinkWindow(now)
                return true
            }

            // Fill the window.
            while inFlight.count < window, let i = queue.popFront() {
                let output = sessions[i].initiate(now: now, wallClock: nextTimestamp(i), into: buffer,
                                                  host: EmulatedPeerHost(index: indexBase &+ UInt32(i)))
                guard case .writeToNetwork = output else {
                    if case .dropped(.handshake(let error)) = output { trouble[i] = .initiationFailed(error) }
                    continue   // nothing will change that: the peer stays out
                }
                try socket.send(UnsafeRawBufferPointer(rebasing: buffer[0..<InitiationMessage.size]), to: gateway)
                report.initiationsSent += 1
                progress[i] = .inFlight(since: now)
                inFlight.append(i)
                lastInitiation = now
            }
            guard !inFlight.isEmpty else { break }   // only peers that cannot initiate are left

            // Answers: wait for the first (at most until the oldest initiation's retry is
            // due), then take whatever else is already there.
            var wait = Duration.milliseconds(10)
            for i in inFlight {
                if case .inFlight(let since) = progress[i] { wait = min(wait, (since + pacing.retryAfter).since(now)) }
            }
            while let (length, from) = try socket.receive(into: buffer, timeout: wait) {
                wait = .zero
                guard from == gateway, length >= 8 else { continue }
                now = Engine.Clock.now()
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
                let type = bytes[0]
                // Our index: a response's receiver field (offset 8), a cookie reply's (offset 4).
                let receiverOffset = type == MessageType.response.rawValue ? 8 : 4
                let index = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: receiverOffset, as: UInt32.self))
                guard let i = peer(forLocalIndex: index), case .inFlight = progress[i] else { continue }
                switch type {
                case MessageType.response.rawValue:
                    do throws(HandshakeError) {
                        let message: ResponseMessage
                        do throws(MessageError) { message = try ResponseMessage(bytes) } catch { throw .malformed(error) }
                        try sessions[i].consumeResponse(message, now: now, host: EmulatedPeerHost(index: index))
                        keypairs[i] = sessions[i].slots.current
                        progress[i] = .done
                        trouble[i] = nil
                        inFlight.removeAll { $0 == i }
                        completed += 1
                        window = min(ceiling, window + 1)
                    } catch {
                        trouble[i] = .responseRejected(error)   // a forged or stale answer: keep waiting
                    }
                case MessageType.cookieReply.rawValue:
                    do throws(HandshakeError) {
                        try sessions[i].handshake.consumeCookieReply(bytes, now: now)
                        report.cookieReplies += 1
                        progress[i] = .queued
                        inFlight.removeAll { $0 == i }
                        queue.pushFront(i)
                        shrinkWindow(now)
                    } catch {
                        trouble[i] = .cookieRejected(error)
                    }
                default:
                    continue   // transport (a keepalive of an earlier pass): not for now
                }
            }
        }

        report.seconds = Double(Engine.Clock.now().since(start).nanoseconds) / 1e9
        guard completed == peerCount else {
            var reasons: [String: Int] = [:]
            for i in 0..<peerCount where !isDone(progress[i]) { reasons["\(trouble[i] ?? .noAnswer)", default: 0] += 1 }
            let why = reasons.sorted { $0.value > $1.value }.map { "\($0.value) peer(s): \($0.key)" }.joined(separator: "; ")
            throw PeerEmulatorError("handshake with \(gateway): \(completed) of \(peerCount) peers completed within "
                                    + "\(timeout) (\(report.initiationsSent) initiations, \(report.retries) retries, "
                                    + "\(report.cookieReplies) cookie replies); the others: \(why)")
        }
        return report
    }

    private func isDone(_ p: Progress) -> Bool { if case .done = p { true } else { false } }

    /// The wall clock, or just past peer i's last timestamp when the clock has not moved on
    /// by a whole step of the timestamp's granularity (≈ 16.8 ms): the gateway accepts only
    /// strictly newer initiations from a peer.
    private func nextTimestamp(_ i: Int) -> TAI64N {
        var t = Engine.Clock.wall()
        let last = lastTimestamps[i]
        if !(last < t) {
            let nanoseconds = UInt64(last.nanoseconds) + UInt64(TAI64N.whitenerGranularity)
            t = nanoseconds >= 1_000_000_000
                ? TAI64N(label: last.seconds + 1, nanoseconds: 0)
                : TAI64N(label: last.seconds, nanoseconds: UInt32(nanoseconds))
        }
        lastTimestamps[i] = t
        return t
    }

    /// The peer that owns a message sent to local index `index` in this pass, if any.
    func peer(forLocalIndex index: UInt32) -> Int? {
        let i = Int(index &- indexBase)
        return i < peerCount ? i : nil
    }
}

/// An emulated peer's one index (`indexBase + i`, the same for every initiation of a pass).
/// The emulator keeps no table of its own: a peer's keypair is found by that index.
private struct EmulatedPeerHost: SessionHost {
    let index: UInt32
    func allocateIndex() -> UInt32? { index }
    func releaseIndex(_ index: UInt32) {}
    func keypairsChanged(installed: Keypair?, dropped: DroppedKeypairs) {}
    func stagedPacketsExpired(_ count: Int) {}
}

/// A small FIFO with a front door (the handshake's queue of peers).
private struct Deque {
    private var items: [Int]
    private var head = 0
    init(_ range: Range<Int>) { items = Array(range) }
    mutating func popFront() -> Int? {
        guard head < items.count else { return nil }
        defer { head += 1 }
        return items[head]
    }
    mutating func pushBack(_ i: Int) { items.append(i) }
    mutating func pushFront(_ i: Int) {
        if head > 0 { head -= 1; items[head] = i } else { items.insert(i, at: 0) }
    }
}

private func usleepMilliseconds(_ ms: UInt32) {
    var ts = timespec(tv_sec: 0, tv_nsec: Int(ms) * 1_000_000)
    nanosleep(&ts, nil)
}
