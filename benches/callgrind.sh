#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with the machine's noise,
# for A/B comparisons of a change on the request path (BENCHMARKS.md quotes it).
#   bearer   N requests with one bench key's Authorization: Bearer header (oha, 16 connections)
#   bearer-alone  3 000 such requests at 200 req/s (oha -q 200), each request alone in the runtime (under
#            valgrind Keyward answers a few thousand a second): what a lightly loaded proxy pays per request,
#            its runtime's wake-ups and I/O polls included
#   rfc9421  distinct RFC 9421 signed GETs (replay protection on), sent by wrk with the harness's bench.lua
#            and a per-request header file; the count is of the requests wrk completed in 8 s
#   nws4     the same with NWS4 signatures
# Keyward (release build) runs under `valgrind --tool=callgrind --instr-atstart=no`, pinned to core 0, with the
# harness's nginx upstream; instrumentation is switched on after 2 000 warm-up requests (bearer) and off before
# the dump, so start-up and key loading are not counted. Under valgrind sha2 runs its portable code (no SHA
# extensions), so SHA-256 weighs far more in the signed count than it does natively.
# Needs valgrind, nginx, oha and wrk (.ci/run does not install them). Loopback only; bounded counts and time.
# Usage: benches/callgrind.sh [N]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
N=${1:-20000}
WORK=$(mktemp -d /tmp/keyward-callgrind.XXXXXX)
PORT=${KEYWARD_BENCH_PORT:-18300}
UP=$((PORT + 10))
bench_require callgrind.sh valgrind callgrind_control nginx oha wrk
trap 'bench_cleanup "${VG_PID:-}"' EXIT

keyward_release callgrind.sh
bench_upstream_start "$UP"

keyward_bench_store 1000 501 "http://127.0.0.1:$UP"
# wrk runs 8 s (a few thousand requests a second under valgrind): sign more than it can send, since a replayed
# signature is refused.
bench_sign $((N * 5 / 4 > 40000 ? N * 5 / 4 : 40000))

# Start Keyward under callgrind with instrumentation off; wait until it answers.
start() {
  rm -f "$WORK"/cg.out*
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" --instr-atstart=no "$BIN" serve \
    >"$WORK/logs/callgrind.log" 2>&1 &
  VG_PID=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0; sleep 0.2; done
  echo "callgrind.sh: keyward did not come up (see $WORK/logs/callgrind.log)" >&2
  exit 1
}
# Switch instrumentation off, dump, stop; print instructions per request.
finish() { # NAME REQUESTS
  callgrind_control -i off "$VG_PID" >/dev/null 2>&1
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  sleep 0.5
  kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true; VG_PID=""
  local total
  total=$(grep -h '^totals:' "$WORK"/cg.out* | awk '{ s += $2 } END { printf "%.0f\n", s }')
  echo "| $1 | $2 | $total | $((total / $2)) |"
}

# Bearer requests: WARM unmeasured, then N measured; extra oha options (a rate) after them.
bearer() { # NAME WARM N [OHA OPTIONS...]
  local name=$1 warm=$2 n=$3 ok
  shift 3
  start
  taskset -c 1 oha -n "$warm" -c 16 --no-tui -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/" >/dev/null
  callgrind_control -i on "$VG_PID" >/dev/null 2>&1
  ok=$(taskset -c 1 oha -n "$n" -c 16 "$@" --no-tui --output-format json -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["statusCodeDistribution"].get("200", 0))')
  [[ "$ok" == "$n" ]] || { echo "callgrind.sh: only $ok of $n $name requests got 200" >&2; exit 1; }
  finish "$name" "$n"
}

echo "| target | requests | instructions | per request |"
echo "| --- | ---: | ---: | ---: |"
bearer bearer 2000 "$N"
bearer bearer-alone 500 3000 -q 200

# Signed GETs of one scheme, each signature sent once, for 8 s.
signed() { # SCHEME
  start
  callgrind_control -i on "$VG_PID" >/dev/null 2>&1
  local out done_reqs bad
  out=$(BENCH_HEADERS_FILE="$WORK/$1.tsv" taskset -c 1 wrk -t1 -c16 -d8s -s "$HARNESS_DIR/lib/bench.lua" \
    "http://127.0.0.1:$PORT/")
  done_reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
  bad=$(echo "$out" | sed -n 's/.*err_status=\([0-9]*\).*/\1/p')
  [[ "${bad:-0}" == 0 ]] || { echo "callgrind.sh: $bad $1 requests were refused" >&2; exit 1; }
  finish "$1" "$done_reqs"
}
signed rfc9421
signed nws4
