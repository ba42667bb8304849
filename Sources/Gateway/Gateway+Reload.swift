// Live configuration changes: a reload of the file, or a `wg set`, applied as a diff.

import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

extension Gateway {
    /// Applies the changes from the running configuration to `new`, and makes `new` (what
    /// was applied of it) the running configuration. Returns one line per change. A failure
    /// of one tenant does not stop the others; the first is thrown after all were tried.
    @discardableResult
    public func apply(_ new: GatewayConfiguration, fileName: String, source: String = "reload") throws(GatewayError) -> [String] {
        let diff: ConfigurationDiff
        do throws(ConfigurationError) { diff = try configuration.diff(to: new, fileName: fileName) } catch {
            throw GatewayError(error)
        }
        var failures: [String] = []
        for name in diff.removedTenants { removeTenant(name) }
        for t in diff.rebuiltTenants {
            removeTenant(t.name)
            do throws(GatewayError) { try addTenant(t) } catch { failures.append(error.description) }
        }
        for d in diff.changedTenants {
            do throws(GatewayError) { try changeTenant(d) } catch { failures.append(error.description) }
        }
        for t in diff.addedTenants {
            do throws(GatewayError) { try addTenant(t) } catch { failures.append(error.description) }
        }
        // Tenants that went down (their namespace deleted) get a new inner side, with their
        // configuration as it now is.
        var summary = diff.summary
        for r in tenants.values.sorted(by: { $0.configuration.name < $1.configuration.name }) where r.down != nil {
            do throws(GatewayError) {
                try reattach(r)
                summary.append("tenant \(r.configuration.name): reattached to network namespace '\(r.configuration.namespace)' (it was down)")
            } catch { failures.append("tenant \(r.configuration.name) stays down: \(error.description)") }
        }
        // What runs now, in the new file's order.
        var running = new
        running.tenants = new.tenants.compactMap { tenants[$0.name]?.configuration }
        configuration = running
        for line in diff.summary { Log.info("\(source): \(line)") }
        if !failures.isEmpty { throw GatewayError(failures.joined(separator: "\n")) }
        return summary
    }

    /// Reads the configuration file again and applies what changed. A file with problems
    /// changes nothing: the running configuration stays.
    @discardableResult
    public func reload() throws(GatewayError) -> [String] {
        guard let path = configurationPath else { throw GatewayError("no configuration file to reload") }
        let new: GatewayConfiguration
        do throws(ConfigurationError) { new = try GatewayConfiguration.load(path: path) } catch {
            throw GatewayError("\(error)\nthe running configuration stays", underlying: error)
        }
        return try apply(new, fileName: path)
    }
}
