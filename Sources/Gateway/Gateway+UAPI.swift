// `wg` (the cross-platform userspace API) on the gateway's tenants.

import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

extension Gateway: UAPIHandler {
    public func uapiGet(interface: String) -> UAPIDeviceState? {
        tenants[interface].map(deviceState)
    }

    /// A `wg set` (or `setconf`, `syncconf`): the tenant's configuration with the request
    /// applied goes through the same diff as a reload, so unchanged peers keep their sessions.
    public func uapiSet(interface: String, _ request: UAPISetRequest) -> UAPIError? {
        guard let r = tenants[interface] else { return UAPIError(ENODEV, "no xdpwg tenant named \(interface)") }
        let changed: TenantConfiguration
        do throws(UAPIError) { changed = try request.applied(to: r.configuration) } catch { return error }
        if changed.listenPort != r.configuration.listenPort,
           let other = tenants.values.first(where: { $0 !== r && $0.configuration.listenPort == changed.listenPort }) {
            return UAPIError(EADDRINUSE, "listen port \(changed.listenPort) belongs to tenant \(other.configuration.name)")
        }
        var new = configuration
        new.tenants = new.tenants.map { $0.name == interface ? changed : $0 }
        do throws(GatewayError) {
            try apply(new, fileName: "wg set \(interface)", source: "wg set \(interface)")
        } catch {
            Log.error("wg set refused", ["tenant": interface, "error": error.description])
            return UAPIError(EINVAL, error.description)
        }
        return nil
    }

    /// What `wg show` sees of a tenant: its configuration, with the endpoint the peer was
    /// last heard from, its latest handshake and its byte counters.
    func deviceState(_ r: TenantRuntime) -> UAPIDeviceState {
        UAPIDeviceState(privateKey: r.configuration.privateKey, listenPort: r.configuration.listenPort, fwmark: 0,
                        peers: r.configuration.peers.map { p in
            var state = UAPIPeerState(p)
            if let handle = r.handles[p.publicKey], let report = control?.report(handle) {
                if let e = report.endpoint { state.endpoint = Endpoint(address: e.address, port: e.port) }
                state.lastHandshake = report.lastHandshake.map {
                    let ns = StatsSegment.unixNanoseconds($0)
                    return (Int64(ns / 1_000_000_000), Int64(ns % 1_000_000_000))
                }
                state.rxBytes = report.activity.rxBytes
                state.txBytes = report.activity.txBytes
            }
            return state
        })
    }
}
