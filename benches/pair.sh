#!/usr/bin/env bash
# Two proxies at once on one core: each one's CPU time per request, measured while both see the same machine.
#
# load.sh runs the harness's targets one after another, so a ratio between two of them also carries whatever
# the shared machine did in between: on this project's VM the kernel's cost of a proxied request moves by a
# fifth from one minute to the next, which is more than most changes on the request path are worth. Here both
# proxies run pinned to core 0, each loaded by its own wrk (-c32, core 1) through the harness's nginx upstream
# (core 1). Once both answer, a window of DURATION seconds opens: at its two ends each side's CPU time (utime
# and stime of its processes, /proc/PID/stat, kept by the scheduler) and its count of answered requests
# (Keyward's keyward_requests_total, nginx's stub_status) are read, and both loads are stopped (SIGINT: wrk
# reports as at its end) as it closes. wrk's own counts would not do: a wrk with a large header file takes
# seconds to start, so signed sides start first and the other side once they answer. The two share the core
# at about half load each, so the per-request figures are higher than the harness's saturated ones (fewer
# requests per wake-up); what this measures is the ratio, and the sign of the difference round after round.
# Each round starts fresh processes and alternates which side starts first.
#
# SIDE: nginx-plain | keyward-bearer | keyward-rfc9421 | keyward-nws4; a Keyward side may name another build as
# keyward-SCHEME=PATH (e.g. keyward-bearer=/tmp/keyward-before), to A/B a change. Signed sides get distinct
# signed GETs (replay protection on), signed with the bench key before each round. PAIR_KEEP=1 keeps the
# work directory. Needs nginx (with stub_status) and wrk (.ci/run does not install them). Loopback only;
# bounded rounds and time.
# Usage: benches/pair.sh [--rounds N] [--duration S] SIDE_A SIDE_B   (defaults: 6 rounds of 6 s)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh

ROUNDS=6
DURATION=6
while [[ $# -gt 2 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "pair.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -eq 2 ]] || { sed -n '2,22p' "$0" >&2; exit 2; }
SIDES=("$1" "$2")
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ && "$DURATION" =~ ^[1-9][0-9]?$ ]] || {
  echo "pair.sh: --rounds and --duration take 1 to 99" >&2
  exit 2
}
for side in "${SIDES[@]}"; do
  [[ "$side" =~ ^(nginx-plain|keyward-(bearer|rfc9421|nws4)(=.+)?)$ ]] || {
    echo "pair.sh: unknown side $side" >&2
    exit 2
  }
done

WORK=$(mktemp -d /tmp/keyward-pair.XXXXXX)
PORT=${KEYWARD_BENCH_PORT:-18400}
UP=$((PORT + 10))
SIDE_PID=()
bench_require pair.sh nginx wrk taskset
stop_sides() {
  local p
  for p in "${SIDE_PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${SIDE_PID[@]}"; do wait "$p" 2>/dev/null || true; done
  SIDE_PID=()
}
trap 'stop_sides; bench_cleanup ""; [[ -n "${PAIR_KEEP:-}" ]] || rm -rf "$WORK"' EXIT

keyward_release pair.sh
bench_upstream_start "$UP"
keyward_bench_store 1000 501 "http://127.0.0.1:$UP"

# Side i listens on PORT + 2i (its admin API, for Keyward, on the next port).
side_port() { echo $((PORT + 2 * $1)); }
side_bin() { [[ "${SIDES[$1]}" == *=* ]] && echo "${SIDES[$1]#*=}" || echo "$BIN"; }
side_scheme() { local s=${SIDES[$1]%%=*}; echo "${s#keyward-}"; }

# Per signed side and round: more distinct requests than its wrk sends from its start to the window's close (a
# replay is refused, and fails the run).
PER_ROUND=$(((DURATION + 5) * 65000))
sign_round() { # I: $WORK/round$I.tsv, a round's signed GETs for side I (nothing for a bearer or nginx side)
  local i=$1 scheme
  scheme=$(side_scheme "$i")
  [[ "$scheme" == rfc9421 || "$scheme" == nws4 ]] || return 0
  "$(side_bin "$i")" sign --scheme "$scheme" --key-id "$CLIENT_ID" --secret "$SECRET" --print-headers \
    --count "$PER_ROUND" "http://127.0.0.1:$(side_port "$i")/" >"$WORK/round$i.tsv"
}

start_side() { # I: start side I pinned to core 0; sets SIDE_PID[I]
  local i=$1 port
  port=$(side_port "$i")
  if [[ "${SIDES[$i]}" == nginx-plain ]]; then
    bench_nginx_plain_conf "$WORK/run/nginx$i" "$port" "$UP"
    # Its request count, for the measured window, on the next port.
    sed -i '$ s#}$#    server { listen 127.0.0.1:'"$((port + 1))"'; location / { stub_status; } }\n}#' \
      "$WORK/run/nginx$i/plain.conf"
    taskset -c 0 nginx -p "$WORK/run/nginx$i" -e "$WORK/logs/nginx$i.error.log" -c "$WORK/run/nginx$i/plain.conf" \
      -g 'daemon off;' >"$WORK/logs/side$i.out" 2>&1 &
  else
    cp "$WORK/keyward.db" "$WORK/keyward$i.db"
    keyward_bench_config "$WORK/kw$i.toml" "$port" "$WORK/keyward$i.db" "http://127.0.0.1:$UP"
    KEYWARD_CONFIG=$WORK/kw$i.toml taskset -c 0 "$(side_bin "$i")" serve >"$WORK/logs/side$i.out" 2>&1 &
  fi
  SIDE_PID[$i]=$!
  bench_wait_http "$port" && return 0
  echo "pair.sh: side $((i + 1)) (${SIDES[$i]}) did not come up (see $WORK/logs/side$i.out)" >&2
  exit 1
}

ticks() { # PID: "utime stime" of the process and its children (nginx's worker), in clock ticks
  local p user=0 sys=0 u t
  for p in $1 $(pgrep -P "$1" || true); do
    read -r u t < <(awk '{ print $14, $15 }' "/proc/$p/stat")
    user=$((user + u))
    sys=$((sys + t))
  done
  echo "$user $sys"
}

answered() { # I: requests side I has answered so far
  local i=$1 port
  port=$(side_port "$i")
  if [[ "${SIDES[$i]}" == nginx-plain ]]; then
    curl -sf "http://127.0.0.1:$((port + 1))/" | awk 'NR == 3 { print $3 }'
  else
    curl -sf "http://127.0.0.1:$((port + 1))/metrics" |
      awk '/^keyward_requests_total\{/ { s += $NF } END { printf "%d\n", s }'
  fi
}

load() { # I SECONDS: wrk on side I; a signed side sends its round's signed GETs
  local i=$1 secs=$2 port scheme
  port=$(side_port "$i")
  scheme=$(side_scheme "$i")
  if [[ "${SIDES[$i]}" == nginx-plain || "$scheme" == bearer ]]; then
    taskset -c 1 wrk -t1 -c32 -d"${secs}s" -s "$HARNESS_DIR/lib/bench.lua" \
      -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/"
  else
    BENCH_HEADERS_FILE=$WORK/round$i.tsv taskset -c 1 wrk -t1 -c32 -d"${secs}s" \
      -s "$HARNESS_DIR/lib/bench.lua" "http://127.0.0.1:$port/"
  fi
}

CLK_TCK=$(getconf CLK_TCK)
: >"$WORK/rounds"
for round in $(seq 0 $((ROUNDS - 1))); do
  rm -f "$WORK"/round?.tsv
  sign_round 0
  sign_round 1
  start_side 0
  start_side 1
  # Warm-up: each side's connections and first requests (bearer, with the bench key).
  warm=()
  for i in 0 1; do
    taskset -c 1 wrk -t1 -c32 -d1s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$(side_port "$i")/" \
      >/dev/null &
    warm+=("$!")
  done
  wait "${warm[@]}"
  # A signed side's wrk first reads its header file (in wrk's own time), so signed sides start first and the
  # other side once they answer; the window opens once both answer, and both loads are stopped (SIGINT: wrk
  # then reports as at its end) as it closes.
  loads=()
  order=$([[ $((round % 2)) == 0 ]] && echo "0 1" || echo "1 0")
  for pass in signed other; do
    for i in $order; do
      [[ -f "$WORK/round$i.tsv" ]] && kind=signed || kind=other
      [[ "$kind" == "$pass" ]] || continue
      load "$i" $((DURATION + 40)) >"$WORK/out$i" 2>&1 &
      loads[i]=$!
    done
    for i in 0 1; do
      [[ -n "${loads[i]:-}" ]] || continue
      before=$(answered "$i")
      for _ in $(seq 300); do
        [[ $(answered "$i") -gt $((before + 1000)) ]] && break
        sleep 0.05
      done
    done
  done
  sleep 0.5
  c0=($(answered 0) $(answered 1))
  t0=($(ticks "${SIDE_PID[0]}") $(ticks "${SIDE_PID[1]}"))
  sleep "$DURATION"
  t1=($(ticks "${SIDE_PID[0]}") $(ticks "${SIDE_PID[1]}"))
  c1=($(answered 0) $(answered 1))
  # t0 and t1: side 0's user and system ticks, then side 1's.
  # Both loads must still be running at the window's close, or a side ran alone for part of it.
  for i in 0 1; do
    kill -0 "${loads[$i]}" 2>/dev/null || { echo "pair.sh: a load ended inside the window" >&2; exit 1; }
    pkill -INT -P "${loads[$i]}" wrk || true
  done
  wait "${loads[@]}"
  line="round=$((round + 1))"
  for i in 0 1; do
    bad=$(sed -n 's/.*err_status=\([0-9]*\).*/\1/p' "$WORK/out$i")
    [[ -n "$bad" ]] || { echo "pair.sh: no result from side $((i + 1)) (see $WORK/out$i)" >&2; exit 1; }
    [[ "$bad" == 0 ]] || { echo "pair.sh: side $((i + 1)) refused $bad requests" >&2; exit 1; }
    line+=" n$i=$((c1[i] - c0[i])) user$i=$((t1[2 * i] - t0[2 * i])) sys$i=$((t1[2 * i + 1] - t0[2 * i + 1]))"
  done
  echo "$line" >>"$WORK/rounds"
  echo "pair.sh: $line" >&2
  stop_sides
done

python3 - "$WORK/rounds" "$CLK_TCK" "$DURATION" "${SIDES[0]}" "${SIDES[1]}" <<'EOF'
import statistics, sys
path, clk, secs, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [dict(w.split("=", 1) for w in line.split()) for line in open(path)]
us = lambda r, i, k: int(r[f"{k}{i}"]) / clk * 1e6 / int(r[f"n{i}"])
total = lambda r, i: us(r, i, "user") + us(r, i, "sys")
print(f"| round | {a} req/s | µs/req (user + sys) | {b} req/s | µs/req (user + sys) | B / A |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
ratios = []
for r in rows:
    ratios.append(total(r, 1) / total(r, 0))
    cells = [f"{int(r[f'n{i}']) / secs:,.0f} | {total(r, i):.2f} ({us(r, i, 'user'):.2f} + {us(r, i, 'sys'):.2f})"
             for i in (0, 1)]
    print(f"| {r['round']} | {cells[0]} | {cells[1]} | {ratios[-1]:.3f} |")
med = lambda i, k: statistics.median(us(r, i, k) for r in rows)
lower = sum(x < 1 for x in ratios)
print(f"\nB ({b}) over A ({a}), CPU per request: median {statistics.median(ratios):.3f} "
      f"(range {min(ratios):.3f}-{max(ratios):.3f}); B lower in {lower} of {len(ratios)} rounds; "
      f"median user + sys µs/req: A {med(0, 'user'):.2f} + {med(0, 'sys'):.2f}, B {med(1, 'user'):.2f} + {med(1, 'sys'):.2f}")
EOF
