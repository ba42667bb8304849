#if canImport(Glibc)
import Glibc
#endif
import WireGuard

/// Constants for the requests that change links, addresses and routes, from
/// <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/veth.h> and
/// <linux/if_addr.h> (stable kernel ABI).
extension NL {
    // Message types.
    static let deleteLink: UInt16 = 17   // RTM_DELLINK
    static let newAddress: UInt16 = 20   // RTM_NEWADDR
    static let deleteRoute: UInt16 = 25  // RTM_DELROUTE

    // Header flags of requests that change something.
    static let replace: UInt16 = 0x100   // NLM_F_REPLACE
    static let exclusive: UInt16 = 0x200 // NLM_F_EXCL
    static let create: UInt16 = 0x400    // NLM_F_CREATE

    // Link attributes and nests.
    static let iflaAFSpec: UInt16 = 26        // IFLA_AF_SPEC
    static let iflaNetNamespaceFD: UInt16 = 28 // IFLA_NET_NS_FD
    static let iflaInfoData: UInt16 = 2       // IFLA_INFO_DATA
    static let vethInfoPeer: UInt16 = 1       // VETH_INFO_PEER
    static let iflaInet6AddressGenerationMode: UInt16 = 8 // IFLA_INET6_ADDR_GEN_MODE
    static let in6AddressGenerationModeNone: UInt8 = 1   // IN6_ADDR_GEN_MODE_NONE

    // Address attributes and flags.
    static let ifaAddress: UInt16 = 1         // IFA_ADDRESS
    static let ifaLocal: UInt16 = 2           // IFA_LOCAL
    static let ifaFlagNoDAD: UInt8 = 0x02     // IFA_F_NODAD

    // Route header values.
    static let tableMain: UInt8 = 254         // RT_TABLE_MAIN
    static let protocolBoot: UInt8 = 3        // RTPROT_BOOT (what `ip route` sets)
    static let scopeUniverse: UInt8 = 0       // RT_SCOPE_UNIVERSE
    static let scopeLink: UInt8 = 253         // RT_SCOPE_LINK
    static let scopeHost: UInt8 = 254         // RT_SCOPE_HOST
    static let scopeNowhere: UInt8 = 255      // RT_SCOPE_NOWHERE
    static let routeUnicast: UInt8 = 1        // RTN_UNICAST
}

/// The requests that change links, addresses and routes, each built as iproute2's `ip`
/// builds the command named in its comment, so that the kernel does exactly what it did when
/// the gateway ran `ip`. Each waits for the kernel's acknowledgement; a refusal throws
/// `.netlink` naming the step, the object and the namespace, with the kernel's reason.
extension RouteNetlink {
    /// `ip link add name NAME numtxqueues Q numrxqueues Q mtu M type veth peer name PEER
    /// numtxqueues Q numrxqueues Q mtu M netns NS`: a veth pair whose first end is in this
    /// socket's namespace and whose peer is in the namespace `peerNamespaceFD` refers to.
    func createVeth(name: String, peer: String, queues: Int, mtu: Int, peerNamespaceFD: Int32,
                    peerPlace: String) throws(SystemError) {
        try acknowledged("creating veth \(name)/\(peer) (peer in \(peerPlace))") { sequence in
            RouteNetlink.createVethRequest(name: name, peer: peer, queues: queues, mtu: mtu,
                                           peerNamespaceFD: peerNamespaceFD, sequence: sequence)
        }
    }

    /// `ip link set dev NAME addrgenmode none arp off mtu M` while the link is down: like a wg
    /// interface, no link-local address and no ARP or ND.
    func configureAsTunnel(name: String, mtu: Int, place: String) throws(SystemError) {
        try acknowledged("setting addrgenmode none, arp off and MTU \(mtu) on '\(name)' in \(place)") { sequence in
            RouteNetlink.setLinkRequest(name: name, index: 0, flags: NL.iffNoARP, change: NL.iffNoARP, mtu: mtu,
                                        noIPv6AddressGeneration: true, sequence: sequence)
        }
    }

    /// `ip link set dev NAME [mtu M] up`.
    func setUp(name: String, mtu: Int? = nil, place: String) throws(SystemError) {
        let what = mtu.map { "setting MTU \($0) on '\(name)' and bringing it up" } ?? "bringing up '\(name)'"
        try acknowledged("\(what) in \(place)") { sequence in
            RouteNetlink.setLinkRequest(name: name, index: 0, flags: NL.iffUp, change: NL.iffUp, mtu: mtu,
                                        sequence: sequence)
        }
    }

    /// `ip link set dev NAME alias TEXT`.
    func setAlias(name: String, _ alias: String, place: String) throws(SystemError) {
        try acknowledged("setting the alias of '\(name)' in \(place)") { sequence in
            RouteNetlink.setLinkRequest(name: name, index: 0, flags: 0, change: 0, alias: alias, sequence: sequence)
        }
    }

    /// `ip link del dev NAME`, by index (a link made again under the same name since it was
    /// looked up is not touched: the kernel answers ENODEV).
    func deleteLink(index: Int32, name: String, place: String) throws(SystemError) {
        try acknowledged("deleting '\(name)' in \(place)") { sequence in
            RouteNetlink.deleteLinkRequest(index: index, sequence: sequence)
        }
    }

    /// `ip addr add ADDRESS/LENGTH dev NAME [nodad]` (nodad for IPv6: the address is usable at
    /// once; there is nobody on a tenant link to collide with).
    func addAddress(_ address: IPAddress, prefixLength: Int, interfaceIndex: Int32, interfaceName: String,
                    place: String) throws(SystemError) {
        try acknowledged("adding address \(address)/\(prefixLength) to '\(interfaceName)' in \(place)") { sequence in
            RouteNetlink.addAddressRequest(address, prefixLength: prefixLength, interfaceIndex: interfaceIndex,
                                           sequence: sequence)
        }
    }

    /// `ip route replace PREFIX dev NAME` (the prefix without host bits: the kernel refuses
    /// them, and `ip` did too).
    func replaceRoute(_ prefix: IPPrefix, interfaceIndex: Int32, interfaceName: String,
                      place: String) throws(SystemError) {
        let masked = prefix.masked
        try acknowledged("replacing the route to \(masked) via '\(interfaceName)' in \(place)") { sequence in
            RouteNetlink.routeRequest(type: NL.newRoute, masked, interfaceIndex: interfaceIndex, sequence: sequence)
        }
    }

    /// `ip route del PREFIX dev NAME`.
    func deleteRoute(_ prefix: IPPrefix, interfaceIndex: Int32, interfaceName: String,
                     place: String) throws(SystemError) {
        let masked = prefix.masked
        try acknowledged("deleting the route to \(masked) via '\(interfaceName)' in \(place)") { sequence in
            RouteNetlink.routeRequest(type: NL.deleteRoute, masked, interfaceIndex: interfaceIndex, sequence: sequence)
        }
    }

    private func acknowledged(_ what: String, _ build: (UInt32) -> [UInt8]) throws(SystemError) {
        _ = try perform(request: what, isDump: false, build)
    }

    // MARK: Request formats (static so that tests can check them on known bytes)

    /// struct ifinfomsg: family, pad, type (u16), index (s32), flags (u32), change (u32).
    static func linkHeader(index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) -> [UInt8] {
        var header: [UInt8] = [0, 0, 0, 0]
        withUnsafeBytes(of: index) { header += $0 }
        withUnsafeBytes(of: flags) { header += $0 }
        withUnsafeBytes(of: change) { header += $0 }
        return header
    }

    static func createVethRequest(name: String, peer: String, queues: Int, mtu: Int, peerNamespaceFD: Int32,
                                  sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.newLink, flags: NL.request | NL.ack | NL.create | NL.exclusive,
                                            sequence: sequence)
        message.appendFamilyHeader(linkHeader())
        message.appendAttribute(type: NL.iflaName, string: name)
        message.appendAttribute(type: NL.iflaNumTXQueues, uint32: UInt32(queues))
        message.appendAttribute(type: NL.iflaNumRXQueues, uint32: UInt32(queues))
        message.appendAttribute(type: NL.iflaMTU, uint32: UInt32(mtu))
        message.appendNest(type: NL.iflaLinkInfo) { info in
            info.appendAttribute(type: NL.iflaInfoKind, string: "veth")
            info.appendNest(type: NL.iflaInfoData) { data in
                // The peer's own ifinfomsg and attributes.
                data.appendNest(type: NL.vethInfoPeer) { peerInfo in
                    peerInfo.appendFamilyHeader(linkHeader())
                    peerInfo.appendAttribute(type: NL.iflaName, string: peer)
                    peerInfo.appendAttribute(type: NL.iflaNumTXQueues, uint32: UInt32(queues))
                    peerInfo.appendAttribute(type: NL.iflaNumRXQueues, uint32: UInt32(queues))
                    peerInfo.appendAttribute(type: NL.iflaMTU, uint32: UInt32(mtu))
                    peerInfo.appendAttribute(type: NL.iflaNetNamespaceFD, uint32: UInt32(bitPattern: peerNamespaceFD))
                }
            }
        }
        return message.bytes
    }

    /// RTM_NEWLINK on an existing link (by index, or by name when the index is 0): interface
    /// flags under `change`, and optionally MTU, alias and IPv6 address generation.
    static func setLinkRequest(name: String, index: Int32, flags: UInt32, change: UInt32, mtu: Int? = nil,
                               alias: String? = nil, noIPv6AddressGeneration: Bool = false,
                               sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.newLink, flags: NL.request | NL.ack, sequence: sequence)
        message.appendFamilyHeader(linkHeader(index: index, flags: flags, change: change))
        if index == 0 { message.appendAttribute(type: NL.iflaName, string: name) }
        if let mtu { message.appendAttribute(type: NL.iflaMTU, uint32: UInt32(mtu)) }
        if let alias { message.appendAttribute(type: NL.iflaAlias, string: alias) }
        if noIPv6AddressGeneration {
            message.appendNest(type: NL.iflaAFSpec) { spec in
                spec.appendNest(type: UInt16(NL.afInet6)) { inet6 in
                    inet6.appendAttribute(type: NL.iflaInet6AddressGenerationMode, uint8: NL.in6AddressGenerationModeNone)
                }
            }
        }
        return message.bytes
    }

    static func deleteLinkRequest(index: Int32, sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.deleteLink, flags: NL.request | NL.ack, sequence: sequence)
        message.appendFamilyHeader(linkHeader(index: index))
        return message.bytes
    }

    static func addAddressRequest(_ address: IPAddress, prefixLength: Int, interfaceIndex: Int32,
                                  sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.newAddress, flags: NL.request | NL.ack | NL.create | NL.exclusive,
                                            sequence: sequence)
        // struct ifaddrmsg: family, prefixlen, flags, scope, index (u32). `ip` gives 127/8 host
        // scope and every other address global scope.
        let loopback = address.isV4 && address.bytes[0] == 127
        var header: [UInt8] = [address.isV4 ? NL.afInet : NL.afInet6, UInt8(prefixLength),
                               address.isV4 ? 0 : NL.ifaFlagNoDAD, loopback ? NL.scopeHost : NL.scopeUniverse]
        withUnsafeBytes(of: interfaceIndex) { header += $0 }
        message.appendFamilyHeader(header)
        message.appendAttribute(type: NL.ifaLocal, value: address.bytes)
        message.appendAttribute(type: NL.ifaAddress, value: address.bytes)
        return message.bytes
    }

    /// RTM_NEWROUTE (create or replace) or RTM_DELROUTE of a route in the main table through
    /// an interface, with no gateway: the fields `ip route replace|del PREFIX dev NAME` sets.
    static func routeRequest(type: UInt16, _ prefix: IPPrefix, interfaceIndex: Int32, sequence: UInt32) -> [UInt8] {
        let adding = type == NL.newRoute
        var message = NetlinkMessageBuilder(type: type, flags: adding ? NL.request | NL.ack | NL.create | NL.replace
                                                                       : NL.request | NL.ack,
                                            sequence: sequence)
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        message.appendFamilyHeader([prefix.address.isV4 ? NL.afInet : NL.afInet6, UInt8(prefix.length), 0, 0,
                                    NL.tableMain, adding ? NL.protocolBoot : 0,
                                    adding ? NL.scopeLink : NL.scopeNowhere, adding ? NL.routeUnicast : 0,
                                    0, 0, 0, 0])
        message.appendAttribute(type: NL.rtaDestination, value: prefix.address.bytes)
        message.appendAttribute(type: NL.rtaOutputInterface, uint32: UInt32(bitPattern: interfaceIndex))
        return message.bytes
    }
}
