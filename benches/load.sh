#!/usr/bin/env bash
# Whole-proxy load benchmark: builds Keyward in release mode and runs the shared peer harness
# (../shared/bench/run.sh) twice, Keyward next to the peers each time:
#   1. the saturation table: direct, nginx/HAProxy plain and auth, keyward-bearer (harness defaults:
#      3 rounds x 10 s after a 2 s warm-up, 64 connections); extra harness options (e.g. --rate 20000) go here;
#   2. the signed table: every wrk run starts the per-request header file from its first line and a signature
#      is accepted once, so a file serves exactly one 10 s round (no warm-up) of one Keyward process. The table
#      is therefore run $KEYWARD_BENCH_SIGNED_RUNS times (default 3), each with a fresh Keyward and fresh
#      signatures, and the runs' rounds are merged into one table (…-signed.md: medians over the runs, ratios
#      paired within each run, as the harness pairs its own rounds):
#   keyward-bearer   Authorization: Bearer <token> of one bench key (the same header the peers get)
#   keyward-rfc9421  a distinct RFC 9421 signature per request (replay protection on)
#   keyward-nws4     a distinct NWS4 signature per request (replay protection on)
#   nginx-plain-hfile  nginx-plain driven through the same per-request-headers path as the signed targets,
#                      so their req/s compare like with like (its CPU column is not meaningful: the harness
#                      accounts extra targets to the Keyward process)
# Usage: benches/load.sh [--keys N] [--pgo] [harness options...]   e.g. benches/load.sh --pgo --rate 20000
#   --pgo  measure the profile-guided build (scripts/pgo-build.sh; what the Docker image ships) instead of the
#          plain `cargo build --release`; the result files say which build ran.
# Results: the harness prints the table and writes it under $BENCH_RESULTS (default bench-results/); each table
# gets the proxy process's own CPU per request appended (benches/process_cpu.py), which at a fixed rate below
# saturation is steadier than the harness's core-busy column; the first also gets oha's errors by kind
# (benches/oha_errors.py), since the harness counts the requests oha cancels at its deadline as errors.
set -Eeuo pipefail
# A failed step would otherwise end the run without a word (the signed runs' harness output goes to /dev/null).
trap 'rc=$?; echo "load.sh: stopped at line $LINENO (exit $rc): $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=benches/common.sh
source benches/common.sh
[[ -x "$HARNESS_DIR/run.sh" || -f "$HARNESS_DIR/run.sh" ]] || { echo "load.sh: no harness at $HARNESS_DIR" >&2; exit 2; }

KEYS=1000
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --pgo) export KEYWARD_BENCH_PGO=1; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

keyward_release load.sh
build_note() {
  if [[ "${KEYWARD_BENCH_PGO:-0}" == 1 ]]; then
    printf '\nKeyward build: profile-guided (scripts/pgo-build.sh), commit %s\n' "$(git rev-parse --short HEAD)"
  else
    printf '\nKeyward build: plain release (cargo build --release), commit %s\n' "$(git rev-parse --short HEAD)"
  fi
}

export BENCH_WORK=${BENCH_WORK:-$(mktemp -d /tmp/keyward-bench.XXXXXX)}
export BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench-results}
export BENCH_KEYS=$KEYS
mkdir -p "$BENCH_RESULTS" "$BENCH_WORK/kw"
PORT=${KEYWARD_BENCH_PORT:-18100}
KEY_INDEX=${BENCH_KEY_INDEX:-500}

# The harness generates its keys deterministically; generate the same set here for the signers.
python3 "$HARNESS_DIR/lib/gen_keys.py" "$KEYS" "$BENCH_WORK/kw/keys" >/dev/null
read -r CLIENT_ID SECRET TOKEN < <(awk -F'\t' -v i="$KEY_INDEX" 'NR == i + 2 { print $1, $2, $3 }' "$BENCH_WORK/kw/keys/keys.tsv")

# Enough distinct signed requests for one 10 s run (the profile-guided build answered 71 000 signed GETs a second
# and ran past 700 000 once); signed again before each run (they expire after 15 min).
LINES=${KEYWARD_BENCH_SIGNED:-900000}
sign_all() {
  echo "load.sh: signing $LINES RFC 9421 and $LINES NWS4 requests" >&2
  local scheme
  for scheme in rfc9421 nws4; do
    "$BIN" sign --scheme "$scheme" --key-id "$CLIENT_ID" --secret "$SECRET" --print-headers --count "$LINES" \
      "http://127.0.0.1:$PORT/" >"$BENCH_WORK/kw/$scheme.tsv"
  done
}
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$BENCH_WORK/kw/plain.tsv"

# Keyward's bench config (benches/common.sh); the upstream is the harness's, given when it starts Keyward.
keyward_bench_config "$BENCH_WORK/kw/bench.toml" "$PORT" "$BENCH_WORK/kw/keyward.db"

# A fresh store for each harness run, the bench keys imported, then serve (pinned by the harness).
CMD="bash -c 'export KEYWARD_CONFIG=$BENCH_WORK/kw/bench.toml; rm -f $BENCH_WORK/kw/keyward.db*; $BIN keys import \$BENCH_KEYS_TSV >&2 && KEYWARD_UPSTREAM__URL=http://\$BENCH_UPSTREAM exec $BIN serve'"
NGINX_PLAIN_PORT=$(( ${BENCH_PORT_BASE:-18080} + 1 ))
HARNESS=(bash "$HARNESS_DIR/run.sh" --cmd "$CMD" --target "keyward-bearer=$PORT")

echo "load.sh: 1/2 saturation table" >&2
# The newest per-run file: the names are timestamps, so the glob's order is their age (no `ls | head`, whose
# pipe may fail under pipefail).
latest_raw() {
  local raws=("$BENCH_RESULTS"/*[0-9].raw)
  [[ -e "${raws[-1]}" ]] || { echo "load.sh: no result file in $BENCH_RESULTS" >&2; return 1; }
  echo "${raws[-1]}"
}
started=$(date +%s)
"${HARNESS[@]}" --peers "${BENCH_PEERS:-direct,nginx-plain,nginx-auth,haproxy-plain,haproxy-auth}" "${args[@]}"
# The process's own CPU per request next to the harness's core-busy column (see benches/process_cpu.py).
raw=$(latest_raw)
python3 benches/process_cpu.py "$raw" | tee -a "${raw%.raw}.md"
# Which of the fixed-rate phase's "errors" oha only cancelled at its deadline (see benches/oha_errors.py).
python3 benches/oha_errors.py "$BENCH_WORK/logs" "$started" | tee -a "${raw%.raw}.md"
build_note | tee -a "${raw%.raw}.md"

RUNS=${KEYWARD_BENCH_SIGNED_RUNS:-3}
MERGED="$BENCH_RESULTS/$(date +%Y%m%d-%H%M%S)-signed"
for run in $(seq "$RUNS"); do
  echo "load.sh: 2/2 signed table, run $run of $RUNS" >&2
  sign_all
  "${HARNESS[@]}" --peers nginx-plain --rounds 1 --warmup 0 --duration 10 --no-install \
    --target "keyward-rfc9421=$PORT" --headers-file "keyward-rfc9421=$BENCH_WORK/kw/rfc9421.tsv" \
    --target "keyward-nws4=$PORT" --headers-file "keyward-nws4=$BENCH_WORK/kw/nws4.tsv" \
    --target "nginx-plain-hfile=$NGINX_PLAIN_PORT" --headers-file "nginx-plain-hfile=$BENCH_WORK/kw/plain.tsv" \
    >/dev/null
  # The run's one round becomes round $run of the merged file; the header lines are kept from the first run.
  raw=$(latest_raw)
  if [[ "$run" == 1 ]]; then
    sed 's/^# duration=\([0-9]*\) warmup=0 rounds=1 /# duration=\1 warmup=0 rounds='"$RUNS"' (one per Keyward run) /' "$raw" >"$MERGED.raw"
  else
    grep -v '^#' "$raw" | sed "s/ round=1 / round=$run /" >>"$MERGED.raw"
  fi
done
python3 "$HARNESS_DIR/lib/summarize.py" "$MERGED.raw" | tee "$MERGED.md"
python3 benches/process_cpu.py "$MERGED.raw" | tee -a "$MERGED.md"
build_note | tee -a "$MERGED.md"
echo "load.sh: signed table of $RUNS runs: $MERGED.md" >&2
