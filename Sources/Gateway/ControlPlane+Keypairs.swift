import Engine
import WireGuard

/// The control plane as a session's host: local indices from the data plane's keypair table,
/// keypairs published there for the workers, staged packets given up counted.
struct PeerSessionHost: SessionHost {
    let control: ControlPlane
    let session: PeerSession

    func allocateIndex() -> UInt32? { control.allocateIndex() }
    func releaseIndex(_ index: UInt32) { control.releaseIndex(index) }
    func keypairsChanged(installed: Keypair?, dropped: DroppedKeypairs) {
        control.keypairsChanged(of: session, installed: installed, dropped: dropped)
    }
    func stagedPacketsExpired(_ count: Int) { control.counters.add(.stagedDropped, count) }
}

// Keypairs (indices, publication for the workers, retirement) and the timers' scheduling.
extension ControlPlane {
    func host(_ session: PeerSession) -> PeerSessionHost { PeerSessionHost(control: self, session: session) }

    // MARK: Keypairs

    func allocateIndex() -> UInt32? {
        state.keypairs.allocateIndex {
            var r: UInt32 = 0
            withUnsafeMutableBytes(of: &r) { systemRandomBytes($0) }
            return r
        }
    }

    /// A handshake's index that will never name a keypair (our initiation replaced or given
    /// up, or a response that failed): free again.
    func releaseIndex(_ index: UInt32) {
        pendingHandshakes.removeValue(forKey: index)
        state.keypairs.release(index: index)
    }

    /// Publishes a session's new keypair for the workers, points them at its current one, and
    /// retires what left the slots.
    func keypairsChanged(of session: PeerSession, installed: Keypair?, dropped: DroppedKeypairs) {
        if let keypair = installed {
            let entry = KeypairEntry.make(keypair, peer: session.handle, tenant: UInt32(session.tenant))
            session.entries[keypair.localIndex] = entry
            state.keypairs.publish(entry)
        }
        publishSending(session)
        retire(dropped, of: session)
    }

    /// The workers send with the session's current keypair.
    private func publishSending(_ session: PeerSession) {
        let entry = session.slots.current.flatMap { session.entries[$0.localIndex] }
        state.peers.setSending(session.handle, entry)
    }

    private func retire(_ dropped: DroppedKeypairs, of session: PeerSession) {
        for keypair in dropped {
            keypair.invalidate()
            guard let entry = session.entries.removeValue(forKey: keypair.localIndex) else { continue }
            _ = state.keypairs.unpublish(index: keypair.localIndex)
            state.keypairs.release(index: keypair.localIndex)
            reclaimer.retire(.keypairEntry(entry))
        }
    }

    func sessionEstablished(_ session: PeerSession) {
        counters.add(.sessionsEstablished)
        session.handshakesCompleted += 1
        session.lastHandshake = Clock.wall()
        onSessionEstablished?(tenantName(session), session.publicKey, session.handshakesCompleted == 1)
    }

    // MARK: Timers

    /// Puts a session on this turn's list for `tick`.
    func markDue(_ session: PeerSession) {
        guard !session.due else { return }
        session.due = true
        dueSessions.append(session)
    }

    /// Queues the session at its next deadline: the earliest of its timers and, while its
    /// endpoint has no route, the next route lookup. Called after every `perform`.
    func schedule(_ session: PeerSession) {
        var next = session.nextDeadline
        if session.endpoint != nil, resolveRoute != nil, state.peers.currentRoute(session.handle) == nil {
            next = min(next ?? session.nextRouteLookup, session.nextRouteLookup)
        }
        guard let next else { return }
        if let queued = session.scheduled, queued <= next { return }   // that entry wakes it early enough
        session.scheduled = next
        wakeups.push(next, session)
        if wakeups.count > 2 * peers.count + 1024 { wakeups.compact(peers.values) }
    }

    /// Turns the workers' new activity into timer events, fires due timers and carries out
    /// what they ask, for the peers that have something to do (never a walk over all of
    /// them); frees what no worker can hold any more.
    public func tick(now: Instant) {
        state.peers.takeActive { handle in
            guard let session = peers[handle] else { return }
            noteActivity(session)
            markDue(session)
        }
        while let entry = wakeups.popDue(now) {
            let session = entry.session
            guard session.scheduled == entry.time, peers[session.handle] === session else { continue }   // stale
            session.scheduled = nil
            markDue(session)
        }
        let due = dueSessions
        dueSessions.removeAll(keepingCapacity: true)
        for session in due {
            session.due = false
            if peers[session.handle] === session { perform(session, now: now) }
        }
        reclaimer.collect()
    }

    /// The workers' activity stamps that are newer than what the timers saw.
    private func noteActivity(_ session: PeerSession) {
        let a = state.peers.activity(session.handle)
        if let t = a.lastDataSent, t > session.seen.sent {
            session.seen.sent = t
            session.transportSent(now: t, isKeepalive: false)
        }
        if let t = a.lastKeepaliveReceived, t > session.seen.keepalive {
            session.seen.keepalive = t
            session.transportReceived(now: t, isKeepalive: true)
        }
        if let t = a.lastDataReceived, t > session.seen.received {
            session.seen.received = t
            session.transportReceived(now: t, isKeepalive: false)
        }
    }
}
