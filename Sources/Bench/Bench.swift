// The perf lab behind `xdpwg bench`: a load generator that is never the bottleneck, sinks that
// count what is delivered, the devices under test (xdpwg, xdpwg with crypto off, wireguard-go),
// baselines, instruction counts and the report.
