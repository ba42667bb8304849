import Foundation

/// Gate for tests that need root (network namespaces, XDP). They run when we are root, and
/// also when `XDPWG_REQUIRE_PRIVILEGED=1` (CI), where a test that cannot run must fail
/// rather than skip: `.enabled(if: Privileged.shouldRun)` plus `try Privileged.require()`.
public enum Privileged {
    static var isRoot: Bool { geteuid() == 0 }
    static var required: Bool { ProcessInfo.processInfo.environment["XDPWG_REQUIRE_PRIVILEGED"] == "1" }
    public static var shouldRun: Bool { isRoot || required }

    struct NotPrivileged: Error, CustomStringConvertible {
        var description: String {
            "this test needs root (network namespaces); XDPWG_REQUIRE_PRIVILEGED=1 forbids skipping it"
        }
    }

    public static func require() throws {
        guard isRoot else { throw NotPrivileged() }
    }
}
