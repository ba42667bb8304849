import Gateway
import Testing

@Suite struct GatewaySmokeTests {
    @Test func moduleLinks() { #expect(GatewayModule.self == GatewayModule.self) }
}
