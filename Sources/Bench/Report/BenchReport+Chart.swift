// The report's PNG chart: Mpps per core by inner size, xdpwg vs crypto-off vs wireguard-go vs
// the AEAD alone, one panel per direction. At each size every device's bar is the same scenario
// (the fewest peers, then the fewest workers, run at that size), named under the size. Drawn by python3 + matplotlib (Agg backend: no display)
// from the report's own JSON.
//
// The script is embedded here rather than shipped as a file: `xdpwg` is one binary that runs
// from wherever it was built or installed, and a file beside it would have to be found (and
// kept in step with the JSON it reads). The script reads only the JSON keys written by
// BenchReport.swift, including the computed `mpps_per_core`.

import Engine
import Foundation
import Lab

#if canImport(Glibc)
import Glibc
#endif

extension BenchReport {
    /// Draws the chart into `png` (replacing it). Throws `BenchReportError.matplotlibMissing`
    /// (naming the Debian package) when no python3 here can import matplotlib.
    public func writeChart(png: String) throws {
        // Debian's python3-matplotlib is installed for Debian's interpreter; a python3 found
        // first on PATH (pyenv, a virtualenv) may not see it, so try /usr/bin/python3 first.
        var interpreters: [[String]] = []
        for candidate in ["/usr/bin/python3", Subprocess.which("python3")].compactMap({ $0 }) {
            let resolved = URL(fileURLWithPath: candidate).resolvingSymlinksInPath().path
            if access(candidate, X_OK) == 0,
               !interpreters.contains(where: { URL(fileURLWithPath: $0[0]).resolvingSymlinksInPath().path == resolved }) {
                interpreters.append([candidate])
            }
        }
        try writeChart(png: png, interpreters: interpreters)
    }

    /// `writeChart(png:)` with the interpreters (each a command prefix) to try, in order.
    func writeChart(png: String, interpreters: [[String]]) throws {
        guard !interpreters.isEmpty else {
            throw BenchReportError.pythonMissing(tried: ["/usr/bin/python3", "python3 on PATH"])
        }
        let scratch = try ScratchDirectory()
        let json = scratch.path + "/report.json"
        try writeJSON(to: json)
        // Drawn into the scratch directory, then moved: a failed run leaves no half PNG behind.
        let drawn = scratch.path + "/chart.png"
        for interpreter in interpreters {
            let result = try Command.runAllowingFailure(interpreter + ["-c", Self.chartScript, json, drawn])
            if result.status == Self.noMatplotlibStatus { continue }
            guard result.status == 0 else {
                throw BenchReportError.chartFailed(status: result.status, standardError: result.standardError)
            }
            guard let bytes = FileManager.default.contents(atPath: drawn) else {
                throw BenchReportError.chartFailed(status: 0, standardError: "the script wrote no \(drawn)")
            }
            try writeFileAtomically(Array(bytes), to: png)
            return
        }
        throw BenchReportError.matplotlibMissing(tried: interpreters.map { $0.joined(separator: " ") })
    }

    /// The script's exit status when `import matplotlib` fails.
    static let noMatplotlibStatus: Int32 = 3

    static let chartScript = #"""
import json, sys
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(3)

report_path, png_path = sys.argv[1], sys.argv[2]
with open(report_path) as f:
    report = json.load(f)

results = report["results"]
aead = report["aead"]
# The AEAD bar: the backend xdpwg used (the first xdpwg result that names one).
used = next((r["aead"] for r in results if r["device"] == "xdpwg" and r.get("aead")), None)
cipher = [a for a in aead if a["backend"] == used and not a["in_place"]] if used else []
titles = {"decrypt": "Decrypt (peer → tenant)", "encrypt": "Encrypt (tenant → peer)", "both": "Both directions"}
directions = [d for d in ("decrypt", "encrypt", "both") if any(r["scenario"]["direction"] == d for r in results)]
if not directions:
    directions = [d for d, op in (("decrypt", "open"), ("encrypt", "seal")) if any(s["operation"] == op for s in cipher)]
devices = [("xdpwg", "xdpwg", "#1f77b4"), ("xdpwg-crypto-off", "xdpwg, crypto off", "#9ecae1"),
           ("reference-forwarder", "engine ceiling (C reference, no crypto)", "#7f7f7f"),
           ("wireguard-go", "wireguard-go", "#ff7f0e")]

def cipher_rate(direction, size):
    def rate(op):
        for s in cipher:
            if s["operation"] == op and s["size"] == size:
                return s["mpps"]
        return None
    if direction != "both":
        return rate("open" if direction == "decrypt" else "seal")
    e, d = rate("seal"), rate("open")
    return 2 / (1 / e + 1 / d) if e and d else None

fig, axes = plt.subplots(1, max(1, len(directions)), figsize=(6.5 * max(1, len(directions)), 5.2), squeeze=False)
machine = report["machine"]
fig.suptitle("xdpwg perf lab: Mpps per core by inner packet size\n%s, %d CPUs · %s"
             % (machine["cpu_model"], machine["logical_cpus"], machine["date"]), fontsize=11)
if not directions:
    axes[0][0].text(0.5, 0.5, "no results in this report", ha="center", va="center")
    axes[0][0].set_axis_off()

for ax, direction in zip(axes[0], directions):
    mine = [r for r in results if r["scenario"]["direction"] == direction]
    sizes = sorted({r["scenario"]["inner_size"] for r in mine} | ({s["size"] for s in cipher} if not mine else set()))
    # One like-for-like scenario per size, the same for every device: the fewest peers, then
    # the fewest workers, among the scenarios run at that size.
    chosen = {}
    for size in sizes:
        at = [r["scenario"] for r in mine if r["scenario"]["inner_size"] == size]
        if at:
            best = min(at, key=lambda s: (s["peers"], s["workers"]))
            chosen[size] = (best["workers"], best["peers"])
    series = []
    for key, label, colour in devices:
        values = []
        for size in sizes:
            match = [r for r in mine if r["device"] == key and r["scenario"]["inner_size"] == size
                     and (r["scenario"]["workers"], r["scenario"]["peers"]) == chosen.get(size)]
            if not match:
                values.append(("absent", None))
            elif match[0]["not_run"] is not None or match[0]["mpps_per_core"] is None:
                values.append(("not run", None))
            else:
                values.append(("ok", match[0]["mpps_per_core"]))
        if any(state != "absent" for state, _ in values):
            series.append((label, colour, values))
    if used:
        series.append(("%s ChaCha20-Poly1305, 1 core" % used, "#2ca02c",
                        [("ok", v) if v is not None else ("absent", None) for v in (cipher_rate(direction, s) for s in sizes)]))

    width = 0.8 / len(series)
    top = max([v for _, _, vals in series for state, v in vals if state == "ok"] + [0.1])
    for i, (label, colour, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(sizes))]
        heights = [v if state == "ok" else 0 for state, v in values]
        bars = ax.bar(xs, heights, width * 0.95, label=label, color=colour)
        for x, bar, (state, v) in zip(xs, bars, values):
            if state == "ok":
                ax.text(x, v + top * 0.01, "%.2f" % v, ha="center", va="bottom", fontsize=7)
            elif state == "not run":
                ax.text(x, top * 0.01, "not run", ha="center", va="bottom", fontsize=7, rotation=90, color="#b00")
    ax.set_xticks(range(len(sizes)))
    def tick(size):
        if size not in chosen:
            return "%d B" % size
        w, p = chosen[size]
        return "%d B\n%d worker%s, %d peer%s" % (size, w, "" if w == 1 else "s", p, "" if p == 1 else "s")
    ax.set_xticklabels([tick(s) for s in sizes], fontsize=8)
    ax.set_ylim(0, top * 1.18)
    ax.set_xlabel("inner packet size")
    ax.set_ylabel("Mpps per core")
    ax.set_title(titles[direction], fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)

fig.text(0.01, 0.01, "per core: delivered packets per busy second of the core the device is pinned to (/proc/stat); the AEAD alone on one pinned core",
         fontsize=7, color="#555")
fig.tight_layout(rect=(0, 0.03, 1, 1))
fig.savefig(png_path, dpi=110)
"""#
}
