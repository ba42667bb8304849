import WireGuard

/// Looks for key material in what the gateway prints, without printing it: a test that
/// finds a key names where, never the key.
public enum KeyMaterial {
    /// The texts a secret can appear as: base64, and hex in both cases.
    public static func texts(of secrets: [SecretKey]) -> [String] {
        secrets.flatMap { [$0.base64ForDisplay, $0.hexForDisplay, $0.hexForDisplay.uppercased()] }
    }

    /// Pieces this long are matched: long enough never to occur by chance in ordinary
    /// output (64^12 base64 values), short enough to catch a truncated or wrapped key.
    public static let pieceLength = 12

    /// Where `text` holds a `pieceLength`-character piece of any of `secretTexts`: the line
    /// number and the line's first characters before the piece; nil if nowhere.
    public static func leak(of secretTexts: [String], in text: String) -> String? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for secret in secretTexts {
            let chars = Array(secret)
            for start in 0...(chars.count - pieceLength) {
                let piece = String(chars[start..<(start + pieceLength)])
                guard let index = lines.firstIndex(where: { $0.contains(piece) }) else { continue }
                let line = lines[index]
                let before = line.range(of: piece).map { line[..<$0.lowerBound] } ?? ""
                return "line \(index + 1): \"\(before.suffix(40))\" is followed by key material"
            }
        }
        return nil
    }

    /// Whether `bytes` hold the raw 32 bytes of any of `secrets` (a memory image, a segment).
    public static func containsRaw(_ secrets: [SecretKey], in bytes: [UInt8]) -> Bool {
        secrets.contains { secret in
            var key = secret.unsafeValue
            defer { key.wipe() }
            let raw = key.bytes
            guard bytes.count >= raw.count else { return false }
            return (0...(bytes.count - raw.count)).contains { start in
                bytes[start] == raw[0] && Array(bytes[start..<(start + raw.count)]) == raw
            }
        }
    }
}
