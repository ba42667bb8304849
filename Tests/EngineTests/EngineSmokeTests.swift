import Engine
import Testing

@Suite struct EngineSmokeTests {
    @Test func linksSystemLibraries() {
        #expect(!SystemLibraries.libbpfVersion.isEmpty)
        #expect(!SystemLibraries.libsodiumVersion.isEmpty)
    }
}
