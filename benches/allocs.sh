#!/usr/bin/env bash
# Heap allocations per proxied request: malloc and realloc calls counted exactly with uprobes on the C library
# (`perf probe`), a figure that does not move with the machine's noise, for A/B comparisons of a change on the
# request path (BENCHMARKS.md quotes it). Rust's allocator is the C library's malloc here.
#   bearer   N requests with one bench key's Authorization: Bearer header (oha, 16 connections)
#   rfc9421  distinct RFC 9421 signed GETs (replay protection on), sent by wrk with the harness's bench.lua and a
#            per-request header file for 3 s; the count is of the requests wrk completed
#   nws4     the same with NWS4 signatures
# Keyward (release build) runs pinned to core 0 with the harness's nginx upstream; a warm-up of bearer requests
# goes first, and only the measured run is counted (`perf stat -p` around it).
# Needs root (uprobes), perf, nginx, oha and wrk (.ci/run does not install them). Loopback only; bounded counts
# and time.
# Usage: benches/allocs.sh [N]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
N=${1:-20000}
WORK=$(mktemp -d /tmp/keyward-allocs.XXXXXX)
PORT=${KEYWARD_BENCH_PORT:-18400}
UP=$((PORT + 10))
LIBC=${KEYWARD_BENCH_LIBC:-$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ { print $NF; exit }')}
bench_require allocs.sh perf nginx oha wrk
trap 'bench_cleanup "${KW_PID:-}"' EXIT

# The probes stay defined after the run (`perf probe -d 'probe_libc:*'` removes them).
probes=$(perf probe -l 2>/dev/null || true)
for fn in malloc realloc; do
  [[ "$probes" == *"probe_libc:$fn "* ]] || perf probe -q -x "$LIBC" "$fn" >/dev/null
done

keyward_release allocs.sh
bench_upstream_start "$UP"
keyward_bench_store 1000 501 "http://127.0.0.1:$UP"
# wrk runs 3 s at no more than about 60 000 requests a second on this machine: sign more than it can send.
bench_sign 250000

taskset -c 0 "$BIN" serve >"$WORK/logs/keyward.log" 2>&1 &
KW_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
taskset -c 1 oha -n 2000 -c 16 --no-tui -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/" >/dev/null

# count NAME REQUESTS: print the row from the last perf stat output.
count() {
  awk -F, -v name="$1" -v n="$2" '
    /probe_libc:malloc/ { m = $1 } /probe_libc:realloc/ { r = $1 }
    END { printf "| %s | %d | %.2f | %.2f |\n", name, n, m / n, r / n }' "$WORK/stat.csv"
}
# The measured command runs under `perf stat -p`, which counts Keyward's calls while it lasts.
measure() { perf stat -e probe_libc:malloc,probe_libc:realloc -x, -o "$WORK/stat.csv" -p "$KW_PID" -- "$@"; }

echo "| target | requests | malloc per request | realloc per request |"
echo "| --- | ---: | ---: | ---: |"
measure taskset -c 1 oha -n "$N" -c 16 --no-tui -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/" >/dev/null
count bearer "$N"
for scheme in rfc9421 nws4; do
  measure env BENCH_HEADERS_FILE="$WORK/$scheme.tsv" taskset -c 1 wrk -t1 -c16 -d3s \
    -s "$HARNESS_DIR/lib/bench.lua" "http://127.0.0.1:$PORT/" >"$WORK/wrk.out"
  bad=$(sed -n 's/.*err_status=\([0-9]*\).*/\1/p' "$WORK/wrk.out")
  [[ "${bad:-0}" == 0 ]] || { echo "allocs.sh: $bad $scheme requests were refused" >&2; exit 1; }
  count "$scheme" "$(sed -n 's/.*KWBENCH requests=\([0-9]*\).*/\1/p' "$WORK/wrk.out")"
done
