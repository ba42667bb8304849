import CLibBPF
import CLibXDP
import CNUMA
import CSodium

/// Versions of the system libraries the data plane links, for `xdpwg version` and bug reports.
public enum SystemLibraries {
    public static var libbpfVersion: String { String(cString: libbpf_version_string()) }
    public static var libsodiumVersion: String { String(cString: sodium_version_string()) }
    public static var numaAvailable: Bool { numa_available() >= 0 }
    /// libxdp 1.3 exports no version call; its xsk API is present when this symbol links.
    public static var libxdpLinked: Bool {
        let probe: (OpaquePointer?) -> Int32 = xsk_socket__fd
        _ = probe
        return true
    }
}
