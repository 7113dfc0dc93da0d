#!/usr/bin/env python3
"""The proxy process's own CPU time per request, from a harness `.raw` file, as a Markdown table.

The harness's "proxy core µs/req" column is the proxy core's busy time from /proc/stat, which the kernel samples
a tick at a time. At saturation the core is busy all the time and the two agree; at a fixed rate below
saturation the core sleeps and wakes between ticks, and the sampled busy time strays from the process's own
CPU time (`proxy_ticks`, utime + stime from /proc/PID/stat, kept by the scheduler) by up to a fifth either way.
This table reports the process's time: per target and phase, the median over rounds of µs per request, and its
ratio to the reference target's in the same round (the median of those paired ratios, as the harness does).

Usage: process_cpu.py RAW [REFERENCE]   (REFERENCE defaults to nginx-plain)
Targets whose process ticks are under a tenth of the core's busy ticks are left out: the harness measured another
process than the one serving them (it accounts extra targets, such as nginx-plain-hfile, to the Keyward process).
"""

import statistics
import sys
from collections import defaultdict


def parse(path):
    """-> (clk_tck, {(phase, round, target): fields})"""
    clk_tck = 100
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                for word in line[1:].split():
                    if word.startswith("clk_tck="):
                        clk_tck = int(word.split("=", 1)[1])
                continue
            fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
            if "phase" in fields and "target" in fields:
                rows[(fields["phase"], fields["round"], fields["target"])] = fields
    return clk_tck, rows


def us_per_request(fields, clk_tck):
    """µs of process CPU per request; None when the ticks are not the work's (under a tenth of the core's busy
    ticks: the harness measured another process than the one serving the target)."""
    requests = int(fields.get("requests", 0))
    ticks = int(fields.get("proxy_ticks", 0))
    core_busy = int(fields.get("core_proxy", "0/0/0").split("/")[0])
    if requests == 0 or ticks == 0 or ticks * 10 < core_busy:
        return None
    return ticks * 1e6 / clk_tck / requests


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    reference = sys.argv[2] if len(sys.argv) > 2 else "nginx-plain"
    clk_tck, rows = parse(sys.argv[1])
    per = defaultdict(list)  # (phase, target) -> [µs per round]
    ratios = defaultdict(list)  # (phase, target) -> [µs / reference µs, same round]
    order = []
    for (phase, rnd, target), fields in rows.items():
        us = us_per_request(fields, clk_tck)
        if us is None:
            continue
        if (phase, target) not in per:
            order.append((phase, target))
        per[(phase, target)].append(us)
        ref = rows.get((phase, rnd, reference))
        ref_us = us_per_request(ref, clk_tck) if ref else None
        if ref_us:
            ratios[(phase, target)].append(us / ref_us)
    if not order:
        return 0
    print()
    print(f"### Proxy process CPU per request (benches/process_cpu.py: utime + stime of the process, × {reference} paired by round)")
    print()
    print("| phase | target | process µs/req (median) | per round | × " + reference + " |")
    print("| --- | --- | ---: | --- | ---: |")
    for phase, target in order:
        values = per[(phase, target)]
        paired = ratios[(phase, target)]
        ratio = f"{statistics.median(paired):.2f}" if paired else "—"
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {phase} | {target} | {statistics.median(values):.1f} | {rounds} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
