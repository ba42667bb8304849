import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

// How the parser reads and shows single values: lists, addresses, keys, numbers, bytes.
extension ConfigurationParser {
    // MARK: Values

    /// Items of a list value: separated by commas (and, as wg-quick's Address allows, by
    /// whitespace). An empty value is an empty list; an empty item between commas is an error.
    static func listItems(_ value: Value, key: Key, _ n: Int, _ problems: inout ProblemList) -> [Value] {
        if value.isEmpty { return [] }
        var items: [Value] = []
        var start = 0
        let bytes = value.bytes
        while start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: ",") { end += 1 }
            let item = trim(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
            if item.isEmpty {
                problems.add(n, "\(key.rawValue): an empty item in the list")
            } else {
                var i = 0
                while i < item.count {
                    var j = i
                    while j < item.count && !isSpace(item[j]) { j += 1 }
                    items.append(Value(bytes: UnsafeRawBufferPointer(rebasing: item[i..<j])))
                    i = j
                    while i < item.count && isSpace(item[i]) { i += 1 }
                }
            }
            start = end + 1
        }
        return items
    }

    /// "N", "N-M" and comma lists of them, each number at most `max`, none twice; nil (with a
    /// problem) when anything is wrong.
    static func numberList(_ value: Value, key: Key, noun: String, max: Int, _ n: Int,
                           _ problems: inout ProblemList) -> [Int]? {
        let items = listItems(value, key: key, n, &problems)
        if value.isEmpty { problems.add(n, "\(key.rawValue): empty; give \(noun) numbers (N, N-M, or a comma list)") }
        var numbers: [Int] = []
        var ok = !value.isEmpty
        for item in items {
            let bytes = item.bytes
            let range: ClosedRange<Int>
            if let dash = bytes.firstIndex(of: UInt8(ascii: "-")) {
                guard let low = decimal(UnsafeRawBufferPointer(rebasing: bytes[..<dash]), max: max),
                      let high = decimal(UnsafeRawBufferPointer(rebasing: bytes[(dash + 1)...]), max: max)
                else {
                    problems.add(n, "\(key.rawValue): \(shown(item)) is not a \(noun) number or range N-M (0 to \(max))")
                    ok = false
                    continue
                }
                guard low <= high else {
                    problems.add(n, "\(key.rawValue): the range \(low)-\(high) runs backwards")
                    ok = false
                    continue
                }
                range = low...high
            } else {
                guard let number = decimal(bytes, max: max) else {
                    problems.add(n, "\(key.rawValue): \(shown(item)) is not a \(noun) number or range N-M (0 to \(max))")
                    ok = false
                    continue
                }
                range = number...number
            }
            for number in range {
                if numbers.contains(number) {
                    problems.add(n, "\(key.rawValue): \(noun) \(number) is listed twice")
                    ok = false
                    break
                }
                numbers.append(number)
            }
        }
        return ok ? numbers : nil
    }

    static func endpoint(_ value: Value, key: Key, _ n: Int, _ problems: inout ProblemList) -> Endpoint? {
        do throws(Endpoint.ParseError) {
            return try Endpoint(parsing: value.string)
        } catch {
            switch error {
            case .hostName:
                problems.add(n, "\(key.rawValue): \(shownAddress(value)) is a host name; names are not resolved: "
                             + "give an IP address (a.b.c.d:port or [IPv6]:port)")
            case .invalidPort:
                problems.add(n, "\(key.rawValue): the port must be a number from 1 to 65535")
            case .malformed:
                problems.add(n, "\(key.rawValue): \(shownAddress(value)) is not an IPv4 a.b.c.d:port or IPv6 [address]:port")
            }
        }
        return nil
    }

    /// Linux's dev_valid_name, made stricter so the name is also a plain file name for
    /// `/var/run/wireguard/NAME.sock` and safe in any shell: 1-15 printable ASCII characters,
    /// none of them '/', ':' or whitespace, and not "." or "..".
    /// A gateway's name becomes part of file names under /run/xdpwg.
    static func gatewayNameProblem(_ value: Value) -> String? {
        let b = value.bytes
        if b.isEmpty { return "empty; give a name such as edge1" }
        if b.count > 32 { return "longer than 32 characters" }
        let allowed = b.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f
        }
        if !allowed || b[0] == UInt8(ascii: "-") {
            return "\(shown(value)) may hold only letters, digits, '-' and '_', and not start with '-'"
        }
        return nil
    }

    static func interfaceNameProblem(_ value: Value) -> String? {
        let b = value.bytes
        if b.isEmpty { return "empty; give an interface name" }
        if b.count > 15 { return "not a valid interface name: longer than 15 characters" }
        if equals(b, ".") || equals(b, "..") { return "\(shown(value)) is not a valid interface name" }
        if b.contains(where: { $0 <= 0x20 || $0 >= 0x7f || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") }) {
            return "\(shown(value)) is not a valid interface name: no '/', ':', whitespace or non-ASCII characters"
        }
        return nil
    }

    /// A name `ip netns` accepts (a file in /var/run/netns): 1-255 printable ASCII characters
    /// without '/' or whitespace, not "." or "..".
    static func namespaceNameProblem(_ value: Value) -> String? {
        let b = value.bytes
        if b.isEmpty { return "empty; give a network namespace name" }
        if b.count > 255 { return "not a valid network namespace name: longer than 255 characters" }
        if equals(b, ".") || equals(b, "..")
            || b.contains(where: { $0 <= 0x20 || $0 >= 0x7f || $0 == UInt8(ascii: "/") }) {
            return "\(shown(value)) is not a valid network namespace name: no '/', whitespace, "
                + "non-ASCII characters, '.' or '..'"
        }
        return nil
    }

    // MARK: Bytes

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0d).contains(c) }

    static func trim(_ b: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0, end = b.count
        while start < end && isSpace(b[start]) { start += 1 }
        while end > start && isSpace(b[end - 1]) { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: b[start..<end])
    }

    static func equals(_ b: UnsafeRawBufferPointer, _ s: StaticString) -> Bool {
        b.count == s.utf8CodeUnitCount && zip(b, UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)).allSatisfy { $0 == $1 }
    }

    /// ASCII case-insensitive comparison of bytes with a name.
    static func equalsIgnoringCase(_ b: UnsafeRawBufferPointer, _ name: String) -> Bool {
        let n = name.utf8
        guard b.count == n.count else { return false }
        return zip(b, n).allSatisfy { lower($0) == lower($1) }
    }

    static func lower(_ c: UInt8) -> UInt8 {
        c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c + 32 : c
    }

    /// A plain decimal number (digits only, at most 10 of them) not above `max`.
    static func decimal(_ b: UnsafeRawBufferPointer, max: Int) -> Int? {
        guard (1...10).contains(b.count) else { return nil }
        var v = 0
        for c in b {
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + Int(c - UInt8(ascii: "0"))
        }
        return v <= max ? v : nil
    }

    static func decimal(_ s: Substring, max: Int) -> Int? {
        var s = s
        return s.withUTF8 { decimal(UnsafeRawBufferPointer($0), max: max) }
    }

    // MARK: Showing values in messages

    // A value is echoed in a message only when it cannot be key material: a key is 44 base64
    // characters (ending in '=') or 64 hex digits, so short names, numbers and the characters
    // of IP addresses are shown, and anything else is described without its text.

    /// A short value, quoted; longer ones are not shown.
    static func shown(_ value: Value) -> String {
        let b = value.bytes
        guard b.count <= 20, b.allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "'") }) else {
            return "the value"
        }
        return "'\(value.string)'"
    }

    /// An address-like value, quoted when made only of what addresses are made of.
    static func shownAddress(_ value: Value) -> String {
        let b = value.bytes
        let allowed = Array("0123456789abcdefABCDEF.:/[]%".utf8)
        if b.count <= 54 && b.allSatisfy({ allowed.contains($0) }) { return "'\(value.string)'" }
        // Host names: letters, digits, dots and dashes, with at least one dot, short.
        if b.count <= 40, b.contains(UInt8(ascii: ".")),
           b.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":") }) {
            return "'\(value.string)'"
        }
        return shown(value)
    }

    /// A key or section name as the user spelled it, when it looks like a name.
    static func shownName(_ b: UnsafeRawBufferPointer, bracketed: Bool = false) -> String {
        guard !b.isEmpty, b.count <= 24, b.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") })
        else { return bracketed ? "header" : "(not shown)" }
        let name = String(decoding: b, as: UTF8.self)
        return bracketed ? "[\(name)]" : "'\(name)'"
    }

    static func isAlphanumeric(_ c: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(lower(c))
    }

    static func plural(_ count: Int, _ noun: String) -> String { count == 1 ? noun : noun + "s" }
}
