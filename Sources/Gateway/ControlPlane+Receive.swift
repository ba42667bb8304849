import Engine
import WireGuard

// What the workers hand over: handshake messages (the cookie and rate-limit gate, then the
// peer's session), keypairs confirmed by the peer's first data, endpoints that moved.
extension ControlPlane {
    /// Drains every worker queue and handles what they carried.
    public func drain(_ queues: [ControlQueue], now: Instant) {
        var handshakes = 0
        for q in queues {
            q.drain { header, payload in
                switch header.pointee.kind {
                case .handshake:
                    handshakes += 1
                    if handshakes > ControlPlane.underLoadThreshold { underLoadUntil = now + .seconds(1) }
                    handleHandshake(header, payload, now: now)
                case .stagedPacket:
                    stage(peer: header.pointee.peer, payload, now: now)
                case .keypairConfirmed:
                    confirm(peer: header.pointee.peer, localIndex: header.pointee.localIndex, now: now)
                case .endpointChanged:
                    // The peer may have been removed since the worker queued this.
                    if let session = peers[header.pointee.peer] {
                        learnEndpoint(session, from: header)
                        markDue(session)
                    }
                }
            }
        }
        freeHandles.append(contentsOf: coolingHandles)
        coolingHandles.removeAll()
    }

    /// Handshake messages in one drain above which we are "under load" (for a second after):
    /// an eighth of a worker queue, as the kernel's MAX_QUEUED_INCOMING_HANDSHAKES / 8.
    static let underLoadThreshold = 64

    private func handleHandshake(_ header: UnsafePointer<ControlMessage>, _ payload: UnsafeRawBufferPointer, now: Instant) {
        let t = Int(header.pointee.tenant)
        guard let tenant = tenants[t] else { return }
        let h = header.pointee
        let source = h.sourceAddress
        guard let sourceKey = source.bytes.withUnsafeBytes({ SourceAddress(bytes: $0) }) else { return }
        let underLoad = now < underLoadUntil
        switch payload.first.flatMap(MessageType.init(rawValue:)) {
        case .initiation:
            counters.add(.initiationsReceived)
            let message: InitiationMessage
            do throws(MessageError) { message = try InitiationMessage(payload) } catch {
                counters.fail(.malformedInitiation); return
            }
            guard admit(message, tenant: t, source: sourceKey, header: h, now: now, underLoad: underLoad) else { return }
            let session: PeerSession
            do throws(HandshakeError) {
                let peersByKey = tenant.peersByKey
                let all = peers
                let handshake = try tenant.identity.consumeInitiation(message, now: now) { key in
                    peersByKey[key].flatMap { all[$0]?.handshake }
                }
                guard let handle = tenant.peersByKey[handshake.remoteStatic], let found = peers[handle] else { return }
                session = found
            } catch {
                counters.fail(HandshakeFailure(error)); return
            }
            switch session.respond(now: now, into: buffer, host: host(session)) {
            case .writeToNetwork(let length):
                learnEndpoint(session, from: header)
                send(length, for: session)
                counters.add(.responsesSent)
                markDue(session)
            case .dropped(let reason):
                count(reason, of: session)
            case .done, .writeToTunnel:
                break   // not an answer to an initiation
            }
        case .response:
            counters.add(.responsesReceived)
            let message: ResponseMessage
            do throws(MessageError) { message = try ResponseMessage(payload) } catch {
                counters.fail(.malformedResponse); return
            }
            guard let handle = pendingHandshakes[message.receiverIndex], let session = peers[handle],
                  session.tenant == t else {
                counters.fail(.responseToNoInitiation); return
            }
            guard admit(message, tenant: t, source: sourceKey, header: h, now: now, underLoad: underLoad) else { return }
            do throws(HandshakeError) { try session.consumeResponse(message, now: now, host: host(session)) } catch {
                counters.fail(HandshakeFailure(error)); return
            }
            pendingHandshakes.removeValue(forKey: message.receiverIndex)
            sessionEstablished(session)
            learnEndpoint(session, from: header)
            perform(session, now: now)
        case .cookieReply:
            counters.add(.cookieRepliesReceived)
            let message: CookieReplyMessage
            do throws(MessageError) { message = try CookieReplyMessage(payload) } catch {
                counters.fail(.malformedCookieReply); return
            }
            guard let handle = pendingHandshakes[message.receiverIndex], let session = peers[handle],
                  session.tenant == t else {
                counters.fail(.cookieReplyToNoInitiation); return
            }
            do throws(HandshakeError) { try session.handshake.consumeCookieReply(payload, now: now) } catch {
                counters.fail(HandshakeFailure(error))
            }
            markDue(session)
        case .transport, nil:
            counters.fail(.unknownMessageType)
        }
    }

    /// The cookie and rate-limit gate in front of every handshake message (as `Tunnel`'s).
    private func admit(_ message: some MACProtectedMessage, tenant t: Int, source: SourceAddress,
                       header: ControlMessage, now: Instant, underLoad: Bool) -> Bool {
        let tenant = tenants[t]!
        let (decision, limit) = tenant.cookies.evaluate(message, source: source, port: header.sourcePort,
                                                        underLoad: underLoad, now: now, rateLimiter: &tenant.rateLimiter)
        switch decision {
        case .process:
            return true
        case .dropInvalidMAC1:
            counters.fail(.invalidMAC1)
            return false
        case .sendCookieReply:
            let ok = tenant.cookies.createCookieReply(to: message, source: source, port: header.sourcePort,
                                                          now: now, into: buffer)
            if ok {
                sendRaw(CookieReplyMessage.size, tenant: t, to: header.sourceAddress, port: header.sourcePort)
                counters.add(.cookieRepliesSent)
            }
            return false
        case .processIfRateLimiterAllows:
            if limit == .allowed { return true }
            counters.fail(.rateLimited)
            return false
        }
    }

    /// A worker decrypted with a keypair that is not the sending one: if it is the
    /// responder's "next" keypair, the initiator has confirmed the session.
    private func confirm(peer handle: UInt32, localIndex: UInt32, now: Instant) {
        guard let session = peers[handle] else { return }
        guard let next = session.slots.next, next.localIndex == localIndex else { return }
        guard session.receivedWith(next, now: now, host: host(session)) else { return }
        sessionEstablished(session)
        perform(session, now: now)
    }

    /// An authenticated message came from `header`'s source: send there from now on, through
    /// the hop it came from.
    func learnEndpoint(_ session: PeerSession, from header: UnsafePointer<ControlMessage>) {
        let h = header.pointee
        let template = OuterHeaderTemplate(sourceMAC: h.destinationMAC, destinationMAC: h.sourceMAC, vlanTCI: h.vlanTCI,
                                           source: h.destinationAddress, sourcePort: h.destinationPort,
                                           destination: h.sourceAddress, destinationPort: h.sourcePort,
                                           endpointKey: h.endpointKey)
        let old = session.endpoint
        session.endpoint = (h.sourceAddress, h.sourcePort)
        if state.peers.currentRoute(session.handle) == template { return }
        if let retired = state.peers.setRoute(session.handle, template) { reclaimer.retire(.memory(retired)) }
        if let old, old.address != h.sourceAddress || old.port != h.sourcePort {
            Log.info("\(tenantName(session)): peer \(session.publicKey.shortName) moved to \(Self.format(h.sourceAddress, h.sourcePort))")
        }
    }
}
