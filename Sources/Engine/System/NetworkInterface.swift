/// A network interface of the calling thread's network namespace, as it was when looked up.
///
/// The facts come from rtnetlink, which answers for the namespace of the thread asking.
/// Two come from sysfs when it shows this very interface (same ifindex and MAC): the queue
/// counts the driver actually uses (sysfs lists `real_num_rx_queues`; netlink reports the
/// queues allocated, which on a NIC can be the hardware maximum rather than the configured
/// channels) and the NUMA node of the device. /sys shows the namespace it was mounted in, so
/// for an interface of another namespace netlink's queue counts are used and `numaNode` is nil.
public struct NetworkInterface: Equatable, Sendable {
    public let name: String
    /// if_nametoindex's answer.
    public let index: Int32
    public let macAddress: EthernetAddress
    public let mtu: Int
    /// Receive queues: one AF_XDP socket (and one worker) per queue.
    public let rxQueueCount: Int
    public let txQueueCount: Int
    /// The NUMA node of the device; nil when the kernel does not know (virtual devices,
    /// single-node machines report -1) or when sysfs does not show this interface.
    public let numaNode: Int?
    /// IFF_UP: administratively up.
    public let isUp: Bool
    /// IFF_NOARP: no ARP/ND on this link.
    public let isNoARP: Bool
    /// "veth", "bridge", ... from IFLA_INFO_KIND; nil for physical devices.
    public let kind: String?

    /// Looks up `name` in the calling thread's network namespace. `role` only words the
    /// error: `named("eth9", role: "uplink")` throws "uplink 'eth9' does not exist in this
    /// network namespace".
    public static func named(_ name: String, role: String = "interface") throws(SystemError) -> NetworkInterface {
        try Names.validateInterface(name, role: role)
        let link: LinkAttributes
        do {
            link = try RouteNetlink().link(named: name)
        } catch .noSuchInterface {
            throw .noSuchInterface(name: name, role: role)
        }
        return try NetworkInterface(link, role: role)
    }

    init(_ link: LinkAttributes, role: String, consultSysfs: Bool = true) throws(SystemError) {
        guard let bytes = link.address, let mac = EthernetAddress(bytes: bytes) else {
            throw .invalidArgument("\(role) '\(link.name)' has no Ethernet address (link type \(link.hardwareType))")
        }
        name = link.name
        index = link.index
        macAddress = mac
        mtu = link.mtu
        isUp = link.flags & NL.iffUp != 0
        isNoARP = link.flags & NL.iffNoARP != 0
        kind = link.kind

        let sysfs = "/sys/class/net/\(link.name)"
        let sysfsShowsThisInterface = consultSysfs
            && SystemFiles.read("\(sysfs)/ifindex").flatMap { Int32($0) } == link.index
            && SystemFiles.read("\(sysfs)/address").flatMap { EthernetAddress($0) } == mac
        if sysfsShowsThisInterface, let queues = SystemFiles.list("\(sysfs)/queues") {
            let rx = queues.filter { $0.hasPrefix("rx-") }.count
            let tx = queues.filter { $0.hasPrefix("tx-") }.count
            rxQueueCount = rx > 0 ? rx : link.rxQueues ?? 1
            txQueueCount = tx > 0 ? tx : link.txQueues ?? 1
        } else {
            rxQueueCount = link.rxQueues ?? 1
            txQueueCount = link.txQueues ?? 1
        }
        numaNode = sysfsShowsThisInterface
            ? SystemFiles.read("\(sysfs)/device/numa_node").flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
            : nil
    }
}

extension NetworkInterface {
    /// The index and link type (ARPHRD_*: 1 Ethernet, 772 loopback, 0xFFFE none, 519 raw IP)
    /// of interface `name` in the calling thread's network namespace, also for a device
    /// `named` refuses for having no Ethernet address (a TUN device). For the perf lab's
    /// packet sink, which parses frames by link type.
    public static func linkType(named name: String) throws(SystemError) -> (index: Int32, hardwareType: UInt16) {
        let link = try RouteNetlink().link(named: name)
        return (link.index, link.hardwareType)
    }
}
