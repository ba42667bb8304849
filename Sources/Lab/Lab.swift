// The single-machine lab: network namespaces, wireguard-go peers, the gateway as a child
// process, traffic (ping, iperf3) and teardown. `xdpwg lab` runs it; the perf lab and the
// integration tests build on the same topology.
