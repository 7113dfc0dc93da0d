#!/usr/bin/env bash
# Whole-proxy load benchmark: builds Keyward in release mode and runs the shared peer harness
# (../shared/bench/run.sh) twice, Keyward next to the peers each time:
#   1. the saturation table: direct, nginx/HAProxy plain and auth, keyward-bearer (harness defaults:
#      3 rounds x 10 s after a 2 s warm-up, 64 connections); extra harness options (e.g. --rate 20000) go here;
#   2. the signed table: one 10 s round without warm-up, because every wrk run starts the per-request header
#      file from its first line and a signature is accepted once, so a file serves exactly one run:
#   keyward-bearer   Authorization: Bearer <token> of one bench key (the same header the peers get)
#   keyward-rfc9421  a distinct RFC 9421 signature per request (replay protection on)
#   keyward-nws4     a distinct NWS4 signature per request (replay protection on)
#   nginx-plain-hfile  nginx-plain driven through the same per-request-headers path as the signed targets,
#                      so their req/s compare like with like (its CPU column is not meaningful: the harness
#                      accounts extra targets to the Keyward process)
# Usage: benches/load.sh [--keys N] [harness options...]   e.g. benches/load.sh --rate 20000
# Results: the harness prints the table and writes it under $BENCH_RESULTS (default bench-results/).
set -euo pipefail
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
    *) args+=("$1"); shift ;;
  esac
done

keyward_release load.sh

export BENCH_WORK=${BENCH_WORK:-$(mktemp -d /tmp/keyward-bench.XXXXXX)}
export BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench-results}
export BENCH_KEYS=$KEYS
mkdir -p "$BENCH_RESULTS" "$BENCH_WORK/kw"
PORT=${KEYWARD_BENCH_PORT:-18100}
KEY_INDEX=${BENCH_KEY_INDEX:-500}

# The harness generates its keys deterministically; generate the same set here for the signers.
python3 "$HARNESS_DIR/lib/gen_keys.py" "$KEYS" "$BENCH_WORK/kw/keys" >/dev/null
read -r CLIENT_ID SECRET TOKEN < <(awk -F'\t' -v i="$KEY_INDEX" 'NR == i + 2 { print $1, $2, $3 }' "$BENCH_WORK/kw/keys/keys.tsv")

# Enough distinct signed requests for one 10 s run.
LINES=${KEYWARD_BENCH_SIGNED:-700000}
echo "load.sh: signing $LINES RFC 9421 and $LINES NWS4 requests" >&2
"$BIN" sign --scheme rfc9421 --key-id "$CLIENT_ID" --secret "$SECRET" --print-headers --count "$LINES" "http://127.0.0.1:$PORT/" >"$BENCH_WORK/kw/rfc9421.tsv"
"$BIN" sign --scheme nws4 --key-id "$CLIENT_ID" --secret "$SECRET" --print-headers --count "$LINES" "http://127.0.0.1:$PORT/" >"$BENCH_WORK/kw/nws4.tsv"
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$BENCH_WORK/kw/plain.tsv"

# Keyward's bench config (benches/common.sh); the upstream is the harness's, given when it starts Keyward.
keyward_bench_config "$BENCH_WORK/kw/bench.toml" "$PORT" "$BENCH_WORK/kw/keyward.db"

# A fresh store for each harness run, the bench keys imported, then serve (pinned by the harness).
CMD="bash -c 'export KEYWARD_CONFIG=$BENCH_WORK/kw/bench.toml; rm -f $BENCH_WORK/kw/keyward.db*; $BIN keys import \$BENCH_KEYS_TSV >&2 && KEYWARD_UPSTREAM__URL=http://\$BENCH_UPSTREAM exec $BIN serve'"
NGINX_PLAIN_PORT=$(( ${BENCH_PORT_BASE:-18080} + 1 ))
HARNESS=(bash "$HARNESS_DIR/run.sh" --cmd "$CMD" --target "keyward-bearer=$PORT")

echo "load.sh: 1/2 saturation table" >&2
"${HARNESS[@]}" --peers "${BENCH_PEERS:-direct,nginx-plain,nginx-auth,haproxy-plain,haproxy-auth}" "${args[@]}"

echo "load.sh: 2/2 signed table" >&2
"${HARNESS[@]}" --peers nginx-plain --rounds 1 --warmup 0 --duration 10 --no-install \
  --target "keyward-rfc9421=$PORT" --headers-file "keyward-rfc9421=$BENCH_WORK/kw/rfc9421.tsv" \
  --target "keyward-nws4=$PORT" --headers-file "keyward-nws4=$BENCH_WORK/kw/nws4.tsv" \
  --target "nginx-plain-hfile=$NGINX_PLAIN_PORT" --headers-file "nginx-plain-hfile=$BENCH_WORK/kw/plain.tsv"
