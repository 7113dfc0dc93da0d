#!/usr/bin/env python3
"""oha's errors of a harness run, by kind: which of the fixed-rate phase's "errors" were failures.

The harness (../shared/bench/lib/oha2kv.py) counts every entry of oha's `errorDistribution` as an error and
then warns that the target's figures "are not comparable". One kind is not the target's doing: "aborted due
to deadline" is a request oha cancelled because it was still in flight when the phase's duration ran out (at
20 000 req/s, a few of the last millisecond's requests). This prints, for each fixed-rate run file written
since START (epoch seconds), the kinds and counts, and says which are only the deadline's.

Usage: benches/oha_errors.py LOGS_DIR START
"""
import json
import pathlib
import sys

DEADLINE = "aborted due to deadline"


def main() -> int:
    logs, start = pathlib.Path(sys.argv[1]), float(sys.argv[2])
    rows = []
    for path in sorted(logs.glob("rate-*-r[0-9]*.txt")):
        if ".warmup." in path.name or path.stat().st_mtime < start:
            continue
        try:
            kinds = json.loads(path.read_text()).get("errorDistribution") or {}
        except (OSError, ValueError):
            continue
        rows += [(path.stem.removeprefix("rate-"), kind, count) for kind, count in sorted(kinds.items())]
    if not rows:
        return 0
    print("\n### oha's errors in the fixed-rate phase, by kind (benches/oha_errors.py)\n")
    print("| target and round | kind | requests |")
    print("| --- | --- | ---: |")
    for run, kind, count in rows:
        print(f"| {run} | {kind} | {count} |")
    if all(kind == DEADLINE for _, kind, _ in rows):
        print(
            f'\nEvery one is "{DEADLINE}": a request still in flight when oha\'s duration ended, cancelled by '
            "oha, not refused or failed by the target; the harness's warning about them does not apply."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
