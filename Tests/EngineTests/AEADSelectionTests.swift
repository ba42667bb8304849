import Testing
@testable import Engine
import WireGuard

/// `[Gateway] Crypto = auto`: every backend self-tested and timed, the fastest verified one chosen.
@Suite struct AEADSelectionTests {
    @Test func theSurveyMeasuresEveryBackendAndAutoPicksOneThatPassedItsSelfTest() throws {
        let survey = AEADSelection.survey()
        #expect(survey.map(\.backend) == AEADBackend.allCases)
        // All three libraries are linked and run on any x86-64: all must be usable here.
        for m in survey {
            #expect(m.isUsable, "\(m.backend): \(m.failure ?? "")")
            #expect(m.mpps1420 > 0 && m.mpps64 > m.mpps1420, "\(m.summary)")
            #expect(m.cost.isFinite)
        }
        let chosen = try #require(AEADSelection.fastest(survey))
        #expect(survey.first { $0.backend == chosen }?.isUsable == true)
        #expect(survey.allSatisfy { $0.cost >= survey.first { $0.backend == chosen }!.cost })
        // What auto picked passes the self-test again on its own.
        let cipher = try AEADSelection.verifiedCipher(chosen)
        #expect(cipher.backend == chosen)
        #expect(AEADSelection.summary(survey, chosen: chosen).hasPrefix("\(chosen.name) "))
    }

    @Test func theRuleIsTheLowestCombinedCostAmongUsableBackends() {
        func m(_ b: AEADBackend, _ large: Double, _ small: Double, failure: String? = nil) -> AEADMeasurement {
            AEADMeasurement(backend: b, library: b.libraryVersion, failure: failure, mpps1420: large, mpps64: small)
        }
        // 1/0.5 + 1/2 = 2.5 µs beats 1/0.4 + 1/4 = 2.75 µs and 1/0.3 + 1/1 = 4.33 µs.
        #expect(AEADSelection.fastest([m(.libsodium, 0.3, 1), m(.openssl, 0.5, 2), m(.ipsecMB, 0.4, 4)]) == .openssl)
        // An unusable backend never wins, however fast it claims to be.
        #expect(AEADSelection.fastest([m(.libsodium, 0.3, 1), m(.openssl, 9, 9, failure: "x")]) == .libsodium)
        #expect(AEADSelection.fastest([m(.openssl, 0, 0, failure: "fails its known-answer test")]) == nil)
        #expect(m(.openssl, 0.494, 0.835).summary == "openssl 0.49 Mpps at 1420 B, 0.84 Mpps at 64 B")
        #expect(m(.ipsecMB, 0, 0, failure: "cannot allocate").summary == "ipsec-mb unusable (cannot allocate)")
    }
}
