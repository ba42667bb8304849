import Engine
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Process umask")
struct ProcessUmaskTests {
    @Test("temporary umasks from many threads at once leave the process's umask as it was")
    func concurrentChangesRestore() async {
        let before = umask(0o022)
        defer { umask(before) }
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<8 {
                group.addTask {
                    let mask: mode_t = i % 2 == 0 ? 0o177 : 0o077
                    for _ in 0..<2000 {
                        // Inside, the mask is the one asked for (read by setting the same again).
                        let inside = withProcessUmask(mask) { umask(mask) }
                        #expect(inside == mask)
                    }
                }
            }
        }
        // Without the lock, interleaved save/restore pairs leave a temporary mask behind.
        let after = umask(0o022)
        #expect(after == 0o022)
    }
}
