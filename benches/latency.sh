#!/usr/bin/env bash
# Fixed-rate latency, round by round: the upstream alone, nginx-plain and Keyward (bearer) under the same open
# loop, one after another in each round, so that each round's ratio compares runs a few seconds apart.
#
# The harness's fixed-rate phase (load.sh --rate) gives one p99 per target from rounds spread over minutes, and
# on this project's VM a single p99 moves by a third from one run to the next, for nginx as for Keyward. Here
# every round runs oha (-c64, open loop at RATE req/s, latency from each request's scheduled start, as the
# harness does) for DURATION seconds against `direct` (the harness's nginx upstream itself: what the load
# generator and the shared core add without any proxy), `nginx-plain` and each Keyward side, in an order that
# rotates from round to round, and prints each one's p50 and p99 and, for the proxies, the CPU time they took per
# request answered (utime and stime of the process and its children, /proc/PID/stat, read before and after each
# load), and the load core's busy time per request (core 1's non-idle time in /proc/stat: oha, the upstream, and
# the kernel's share of the proxy's traffic that lands there); then, per Keyward side, the median of its per-round p99 ratio to nginx-plain and the rounds where it
# was lower, and the same for its CPU per request. The proxies run pinned to core 0, oha and the upstream on
# core 1, as in the harness.
#
# Every process stays in the script's session, as in the harness (nginx with `daemon off`). Until 2026-11-29 the
# upstream and nginx-plain daemonized and the Keyward sides did not, and with the kernel's scheduler autogroups
# (/proc/sys/kernel/sched_autogroup_enabled) that was not a fair race: a side shared oha's group, so while it ran
# on core 0 oha's group had a smaller share of core 1 against the upstream's. nginx-plain's own configuration,
# started the way the sides were, had a median p50 28.5 µs over nginx-plain's, as far behind as Keyward's
# (BENCHMARKS.md §1, "a bias in benches/latency.sh").
#
# SIDE: keyward (the release build), NAME=PATH for another build (e.g. before=/tmp/keyward-before),
# nginx-again: a second nginx-plain, the spread of nginx against itself to read Keyward's ratio against, or
# bytecopy: benches/bytecopy, a proxy that only copies bytes (no HTTP, no authentication) on a current-thread
# tokio runtime, the floor any request-path change could reach; the default is one side, keyward. Needs nginx
# and oha (load.sh --rate installs oha). Loopback only; bounded rounds and time.
# Usage: benches/latency.sh [--rounds N] [--duration S] [--rate R] [SIDE...]   (defaults: 6 rounds, 8 s, 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh

ROUNDS=6
DURATION=8
RATE=20000
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    *) echo "latency.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ && "$DURATION" =~ ^[1-9][0-9]?$ && "$RATE" =~ ^[1-9][0-9]{2,5}$ ]] || {
  echo "latency.sh: --rounds and --duration take 1 to 99, --rate 100 to 999999" >&2
  exit 2
}
SIDES=("$@")
[[ ${#SIDES[@]} -gt 0 ]] || SIDES=(keyward)
for side in "${SIDES[@]}"; do
  [[ "$side" == keyward || "$side" == nginx-again || "$side" == bytecopy || "$side" =~ ^[a-z0-9_-]+=.+$ ]] || {
    echo "latency.sh: bad side $side" >&2
    exit 2
  }
done
OHA=$(command -v oha || ls "$HOME/.cargo/bin/oha" 2>/dev/null || true)
[[ -n "$OHA" ]] || { echo "latency.sh: oha is not installed (cargo install oha)" >&2; exit 1; }
bench_require latency.sh nginx taskset python3

WORK=$(mktemp -d /tmp/keyward-latency.XXXXXX)
PORT=${KEYWARD_BENCH_PORT:-18600}
UP=$((PORT + 10))
PLAIN=$((PORT + 20))
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; bench_cleanup ""; rm -rf "$WORK"' EXIT

keyward_release latency.sh
if [[ " ${SIDES[*]} " == *" bytecopy "* ]]; then
  echo "latency.sh: building benches/bytecopy (release)" >&2
  cargo build --release --locked --manifest-path benches/bytecopy/Cargo.toml --target-dir target/bytecopy >&2
fi
bench_upstream_start "$UP"
keyward_bench_store 1000 501 "http://127.0.0.1:$UP"
nginx_plain_start() { # DIR PORT: nginx-plain on PORT pinned to core 0, its files in DIR
  bench_nginx_plain_conf "$1" "$2" "$UP"
  taskset -c 0 nginx -c "$1/plain.conf" -p "$1" -g 'daemon off;' >"$1/logs/nginx-plain.out" 2>&1 &
}
nginx_plain_start "$WORK" "$PLAIN"
PIDS+=("$!")
PLAIN_PID=$!

# Targets: name and port; Keyward side i listens on PORT + 30 + 2i (its admin API on the next port).
NAMES=(direct nginx-plain)
PORTS=("$UP" "$PLAIN")
PROCS=("" "$PLAIN_PID") # nginx-plain's master (its worker is counted as its child)
for i in "${!SIDES[@]}"; do
  side=${SIDES[$i]}
  name=${side%%=*}
  bin=$BIN
  [[ "$side" == *=* ]] && bin=${side#*=}
  [[ "$side" == bytecopy ]] && bin=$PWD/target/bytecopy/release/bytecopy
  port=$((PORT + 30 + 2 * i))
  if [[ "$side" == nginx-again ]]; then
    nginx_plain_start "$WORK/side$i" "$port"
  else
    cp "$WORK/keyward.db" "$WORK/side$i.db"
    keyward_bench_config "$WORK/side$i.toml" "$port" "$WORK/side$i.db" "http://127.0.0.1:$UP"
    KEYWARD_CONFIG=$WORK/side$i.toml taskset -c 0 "$bin" serve >"$WORK/logs/side$i.out" 2>&1 &
  fi
  PIDS+=("$!")
  PROCS+=("$!")
  NAMES+=("$name")
  PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  bench_wait_http "$port" -H "Authorization: Bearer $TOKEN" || {
    echo "latency.sh: nothing answers on port $port" >&2
    exit 1
  }
done

CLK_TCK=$(getconf CLK_TCK)
ticks() { # PID: user and system clock ticks of the process and its children (nginx's worker); 0 without one
  local p sum=0 u t
  [[ -n "$1" ]] || { echo 0; return; }
  for p in $1 $(pgrep -P "$1" || true); do
    read -r u t < <(awk '{ print $14, $15 }' "/proc/$p/stat")
    sum=$((sum + u + t))
  done
  echo "$sum"
}

load_core_busy() { # clock ticks core 1 has spent neither idle nor waiting for I/O
  awk '$1 == "cpu1" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
echo "latency.sh: $ROUNDS rounds of ${DURATION} s per target at $RATE req/s, 64 connections, targets ${NAMES[*]}" >&2
: >"$WORK/rounds"
count=${#NAMES[@]}
for round in $(seq 0 $((ROUNDS - 1))); do
  line="round=$((round + 1))"
  for k in $(seq 0 $((count - 1))); do
    t=$(((k + round) % count))
    before=$(ticks "${PROCS[$t]}")
    core_before=$(load_core_busy)
    timeout $((DURATION + 30)) taskset -c 1 "$OHA" -z "${DURATION}s" -c 64 -q "$RATE" --latency-correction \
      --no-tui --output-format json -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:${PORTS[$t]}/" \
      >"$WORK/oha.json" 2>"$WORK/oha.err" || true
    kv=$(python3 "$HARNESS_DIR/lib/oha2kv.py" "$WORK/oha.json" "$DURATION" 2>>"$WORK/oha.err") || {
      echo "latency.sh: no result from oha against ${NAMES[$t]} ($(tail -1 "$WORK/oha.err"))" >&2
      exit 1
    }
    bad=$(sed -n 's/.*err_status=\([0-9]*\).*/\1/p' <<<"$kv")
    [[ "$bad" == 0 ]] || { echo "latency.sh: ${NAMES[$t]} answered $bad requests with an error" >&2; exit 1; }
    spent=$(($(ticks "${PROCS[$t]}") - before))
    core_spent=$(($(load_core_busy) - core_before))
    answered=$(sed -n 's/^requests=\([0-9]*\).*/\1/p' <<<"$kv")
    line+=" ${NAMES[$t]}:$(sed -n 's/.*lat_p50_us=\([0-9]*\).*lat_p99_us=\([0-9]*\).*/\1,\2/p' <<<"$kv")"
    line+=",$(python3 -c "print(f'{$spent / $CLK_TCK * 1e6 / max($answered, 1):.2f}')")"
    line+=",$(python3 -c "print(f'{$core_spent / $CLK_TCK * 1e6 / max($answered, 1):.2f}')")"
  done
  echo "$line" | tee -a "$WORK/rounds"
done

python3 - "$WORK/rounds" "${NAMES[@]}" <<'EOF'
import statistics
import sys

path, names = sys.argv[1], sys.argv[2:]
rounds = []
for line in open(path):
    fields = dict(f.split(":") for f in line.split()[1:])
    rounds.append({n: tuple(float(x) for x in v.split(",")) for n, v in fields.items()})
for name in names:
    p50 = statistics.median(r[name][0] for r in rounds)
    p99 = statistics.median(r[name][1] for r in rounds)
    cpu = "" if name == "direct" else f", median CPU {statistics.median(r[name][2] for r in rounds):.2f} us a request"
    core = statistics.median(r[name][3] for r in rounds)
    print(f"{name}: median p50 {p50:.0f} us, median p99 {p99:.0f} us{cpu}, load core {core:.2f} us a request")
for name in names[2:]:
    ratios = [r[name][1] / r["nginx-plain"][1] for r in rounds]
    lower = sum(x <= 1 for x in ratios)
    print(
        f"{name} p99 / nginx-plain p99: median {statistics.median(ratios):.2f} "
        f"(per round {', '.join(f'{x:.2f}' for x in ratios)}); at or under nginx-plain in {lower} of {len(ratios)}"
    )
    cpu = [r[name][2] / r["nginx-plain"][2] for r in rounds if r["nginx-plain"][2] > 0]
    if cpu:
        print(
            f"{name} CPU per request / nginx-plain's: median {statistics.median(cpu):.2f} "
            f"(per round {', '.join(f'{x:.2f}' for x in cpu)}); at or under in {sum(x <= 1 for x in cpu)} of {len(cpu)}"
        )
EOF
