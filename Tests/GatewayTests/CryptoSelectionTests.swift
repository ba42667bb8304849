import Testing
import WireGuard
@testable import Gateway

/// What `xdpwg up` does with `[Gateway] Crypto` before any worker starts.
@Suite struct CryptoSelectionTests {
    @Test(arguments: AEADBackend.allCases) func aForcedBackendThatPassesItsSelfTestIsUsed(backend: AEADBackend) throws {
        #expect(try Gateway.chooseCipher(.forced(backend)) == backend)
        #expect(try Gateway.cipher(backend).backend == backend)
    }

    @Test func autoPicksABackendThatPassesItsSelfTest() throws {
        let chosen = try Gateway.chooseCipher(.auto)
        try Gateway.cipher(chosen).selfTest()
    }
}
