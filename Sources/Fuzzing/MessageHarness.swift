// Target `messages`: the WireGuard message codec (Sources/WireGuard/Messages.swift and the
// data plane's free-standing TransportHeader).
//
// Invariants (a break is a finding):
// - `MessageType.classify` and the typed views agree: the type it names parses, no other does,
//   and when it refuses the bytes every view refuses them too;
// - what parses re-encodes byte for byte through the codec's writers (initiation, response,
//   transport header) or its field views (cookie reply);
// - TransportHeader (what the data plane reads first) agrees with the codec on transport
//   messages.

import WireGuard

enum MessageHarness {
    nonisolated(unsafe) private static let scratch = Scratch(InitiationMessage.size)

    static func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let bytes = UnsafeRawBufferPointer(rebasing: input.prefix(FuzzTarget.maxPacketInput))
        let classified = MessageType.classify(bytes)
        let initiation = try? InitiationMessage(bytes)
        let response = try? ResponseMessage(bytes)
        let cookieReply = try? CookieReplyMessage(bytes)
        let transport = try? TransportMessageHeader(bytes)
        let parsed: [MessageType] = [initiation.map { _ in .initiation }, response.map { _ in .response },
                                     cookieReply.map { _ in .cookieReply }, transport.map { _ in .transport }]
            .compactMap { $0 }

        switch classified {
        case .failure(let error):
            if !parsed.isEmpty { finding("classify refused the bytes (\(error)) but \(parsed) parsed them") }
            checkTransportHeader(bytes, isTransport: false)
            return .rejected("\(error)")
        case .success(let type):
            guard parsed == [type] else { finding("classify says \(type) but \(parsed) parsed the bytes") }
            checkTransportHeader(bytes, isTransport: type == .transport)
        }

        if let m = initiation {
            let out = scratch.buffer
            guard InitiationMessage.write(into: out, senderIndex: m.senderIndex, ephemeral: m.ephemeral,
                                          encryptedStatic: m.encryptedStatic, encryptedTimestamp: m.encryptedTimestamp,
                                          mac1: m.mac1, mac2: m.mac2)
            else { finding("InitiationMessage.write refused a 148-byte buffer") }
            requireSame(bytes, UnsafeRawBufferPointer(rebasing: out[..<InitiationMessage.size]), "initiation")
            return .accepted("initiation round trip")
        }
        if let m = response {
            let out = scratch.buffer
            guard ResponseMessage.write(into: out, senderIndex: m.senderIndex, receiverIndex: m.receiverIndex,
                                        ephemeral: m.ephemeral, encryptedNothing: m.encryptedNothing,
                                        mac1: m.mac1, mac2: m.mac2)
            else { finding("ResponseMessage.write refused a 92-byte buffer") }
            requireSame(bytes, UnsafeRawBufferPointer(rebasing: out[..<ResponseMessage.size]), "response")
            return .accepted("response round trip")
        }
        if let m = cookieReply {
            // The codec writes cookie replies through CookieChecker only; the views must cover
            // every byte in order: header, receiver, nonce, encrypted cookie.
            var rebuilt = Array(bytes.prefix(MessageType.headerSize))
            withUnsafeBytes(of: m.receiverIndex.littleEndian) { rebuilt += $0 }
            rebuilt += m.nonce
            rebuilt += m.encryptedCookie
            rebuilt.withUnsafeBytes { requireSame(bytes, $0, "cookie reply") }
            return .accepted("cookie reply round trip")
        }
        if let m = transport {
            let out = scratch.buffer
            guard TransportMessageHeader.write(into: out, receiverIndex: m.receiverIndex, counter: m.counter)
            else { finding("TransportMessageHeader.write refused a 16-byte buffer") }
            requireSame(UnsafeRawBufferPointer(rebasing: bytes[..<TransportMessageHeader.size]),
                        UnsafeRawBufferPointer(rebasing: out[..<TransportMessageHeader.size]), "transport header")
            guard m.payload.count == bytes.count - TransportMessageHeader.size else {
                finding("transport payload view is \(m.payload.count) B of a \(bytes.count)-byte message")
            }
            return .accepted("transport round trip")
        }
        finding("classify accepted the bytes but no view was checked")
    }

    /// The data plane reads a transport header before anything else: it must accept exactly
    /// the 16+-byte prefixes that start 4, 0, 0, 0, and agree with the codec on its fields.
    private static func checkTransportHeader(_ bytes: UnsafeRawBufferPointer, isTransport: Bool) {
        let header = TransportHeader(bytes)
        let startsAsTransport = bytes.count >= TransportHeader.size && bytes[0] == 4 && bytes[1] | bytes[2] | bytes[3] == 0
        guard (header != nil) == startsAsTransport else {
            finding("TransportHeader \(header == nil ? "refused" : "accepted") \(bytes.count) bytes starting \(Array(bytes.prefix(4)))")
        }
        if isTransport {
            guard let header, let codec = try? TransportMessageHeader(bytes) else {
                finding("a transport message the data plane's TransportHeader does not read")
            }
            guard header.receiverIndex == codec.receiverIndex, header.counter == codec.counter else {
                finding("TransportHeader and TransportMessageHeader read different fields")
            }
            var written = [UInt8](repeating: 0, count: TransportHeader.size)
            written.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
            written.withUnsafeBytes { requireSame(UnsafeRawBufferPointer(rebasing: bytes[..<TransportHeader.size]), $0, "TransportHeader") }
        } else if bytes.count >= WireGuardProtocol.keepaliveSize && header != nil {
            finding("classify refused a \(bytes.count)-byte message that starts as transport")
        }
    }

    private static func requireSame(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ what: String) {
        guard a.count == b.count, a.elementsEqual(b) else {
            let at = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
            finding("\(what) did not re-encode byte for byte (first difference at byte \(at))")
        }
    }
}
