#!/usr/bin/env bash
# Profile-guided release build of Keyward: target/pgo/release/keyward.
#   1. build an instrumented binary (-Cprofile-generate) in target/pgo-gen;
#   2. train it on loopback: `keyward echo` as the upstream; wrk sends bearer GETs, then RFC 9421 and NWS4
#      signed GETs (a fresh signature per request, replay protection on), each phase bounded in time
#      (PGO_TRAIN_SECONDS, default 4) and the signed ones in signatures (PGO_TRAIN_SIGNED, default 200 000),
#      to the proxy pinned to one CPU (tokio's current-thread runtime) and then unpinned (one worker per CPU);
#      then 100 refused GETs and 60 signed 1 KiB POSTs, few as in production;
#   3. merge the profile with llvm-profdata (rustup's llvm-tools, added if missing, or llvm-profdata-<LLVM major>
#      from the system) and build again with -Cprofile-use into target/pgo.
# Measured on the bench machine: a quarter less user-space CPU per proxied request than the plain release
# build (BENCHMARKS.md, "The profile-guided build"). The Docker image is built this way.
# Needs wrk and curl. Usage: scripts/pgo-build.sh   (about twice a release build's time, plus the training)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_PHASE=${PGO_TRAIN_SECONDS:-4}
SIGNED=${PGO_TRAIN_SIGNED:-200000}
PROFILES=$ROOT/target/pgo-profiles
# shellcheck source=benches/common.sh
source benches/common.sh
bench_require pgo-build.sh wrk curl

# llvm-profdata must read the profiles of rustc's own LLVM.
profdata() {
  local host sysroot major
  host=$(rustc -vV | sed -n 's/^host: //p')
  sysroot=$(rustc --print sysroot)
  major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  if [[ ! -x "$sysroot/lib/rustlib/$host/bin/llvm-profdata" ]] && command -v rustup >/dev/null; then
    rustup component add llvm-tools >&2 || true
  fi
  if [[ -x "$sysroot/lib/rustlib/$host/bin/llvm-profdata" ]]; then
    echo "$sysroot/lib/rustlib/$host/bin/llvm-profdata"
  elif command -v "llvm-profdata-$major" >/dev/null; then
    command -v "llvm-profdata-$major"
  else
    echo "pgo-build.sh: no llvm-profdata for LLVM $major (rustup component add llvm-tools)" >&2
    return 1
  fi
}
PROFDATA=$(profdata)

echo "pgo-build.sh: 1/3 instrumented build (target/pgo-gen)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES/build" \
  cargo build --release --locked --bin keyward --target-dir target/pgo-gen >&2
GEN=$ROOT/target/pgo-gen/release/keyward
# Build scripts compiled with the instrumentation write profiles as they run: not ours to merge.
rm -rf "$PROFILES/build"

WORK=$(mktemp -d /tmp/keyward-pgo.XXXXXX)
SERVE_PID="" ECHO_PID=""
cleanup() {
  [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null || true
  [[ -n "$ECHO_PID" ]] && kill "$ECHO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$PROFILES/train"
mkdir -p "$PROFILES/train" "$WORK/discard"
# Only the proxy's profile is merged: the echo upstream and the signer write theirs where they are dropped.
export LLVM_PROFILE_FILE=$WORK/discard/%p.profraw

# Training keys: 200 of them, with one used by every request.
{
  printf 'clientId\tclientSecret\tuserName\tdeviceName\tpermissions\n'
  for i in $(seq -w 0 199); do
    secret=$(printf 'keyward-pgo-%s' "$i" | sha256sum | cut -c1-40)
    printf 'pgo-key-%s\t%s\tuser-%s\tdevice-%s\torders:read\n' "$i" "$secret" "$i" "$i"
  done
} >"$WORK/keys.tsv"
read -r CLIENT_ID SECRET < <(awk -F'\t' 'NR == 101 { print $1, $2 }' "$WORK/keys.tsv")
TOKEN=$(printf '%s:%s' "$CLIENT_ID" "$SECRET" | base64 -w0)

PORT=${PGO_PORT:-18500}
UP=$((PORT + 10))
keyward_bench_config "$WORK/kw.toml" "$PORT" "$WORK/keyward.db" "http://127.0.0.1:$UP"
export KEYWARD_CONFIG=$WORK/kw.toml
"$GEN" keys import "$WORK/keys.tsv" >&2

echo "pgo-build.sh: 2/3 training on 127.0.0.1:$PORT ($SECONDS_PER_PHASE s per phase)" >&2
"$GEN" echo --listen "127.0.0.1:$UP" 2>"$WORK/echo.log" &
ECHO_PID=$!
BIN=$GEN
bench_sign "$SIGNED"
start_serve() { # [PREFIX...]: the instrumented proxy, its profile kept; waits until it answers
  LLVM_PROFILE_FILE=$PROFILES/train/keyward-%p.profraw "$@" "$GEN" serve 2>>"$WORK/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && curl -s -o /dev/null "http://127.0.0.1:$UP/" && return 0
    sleep 0.1
  done
  echo "pgo-build.sh: the proxy did not come up (see $WORK/serve.log)" >&2
  exit 1
}
stop_serve() { # a graceful stop writes the profile
  kill -TERM "$SERVE_PID"
  wait "$SERVE_PID" || true
  SERVE_PID=""
}
load() { # NAME WRK-ARGS...: one bounded phase; prints its request count
  local name=$1 out
  shift
  out=$(wrk -t1 -c32 -d"${SECONDS_PER_PHASE}s" "$@" "http://127.0.0.1:$PORT/")
  echo "pgo-build.sh:   $name: $(echo "$out" | awk '/requests in/ { print $1 }') requests" >&2
}
gets() { # the GET phases; each proxy process has its own replay window, so the signed files serve each once
  load "bearer$1" -H "Authorization: Bearer $TOKEN"
  PGO_HEADERS_FILE=$WORK/rfc9421.tsv load "rfc9421$1" -s scripts/pgo-train.lua
  PGO_HEADERS_FILE=$WORK/nws4.tsv load "nws4$1" -s scripts/pgo-train.lua
}

# On one CPU (an affinity mask or a cgroup limit of one) Keyward runs tokio's current-thread runtime, with more
# the multi-thread one: train both where both can run.
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
  start_serve taskset -c 0
  gets " (one CPU)"
  stop_serve
fi
start_serve
gets ""
# Refusals and POSTs are few, as in production: they should not weigh like the GETs.
wrong=$(printf 'pgo-key-000:wrong' | base64 -w0)
for _ in $(seq 100); do
  curl -s -o /dev/null -H "Authorization: Bearer $wrong" "http://127.0.0.1:$PORT/"
done
head -c 1024 /dev/zero | tr '\0' 'k' >"$WORK/body"
posted=0
for scheme in rfc9421 nws4 bearer; do
  for _ in $(seq 20); do
    "$GEN" sign --scheme "$scheme" --key-id "$CLIENT_ID" --secret "$SECRET" -X POST -d "@$WORK/body" \
      "http://127.0.0.1:$PORT/" 2>&1 >/dev/null | grep -q '^HTTP 200' && posted=$((posted + 1))
  done
done
echo "pgo-build.sh:   100 refused GETs, $posted of 60 signed POSTs answered 200" >&2
stop_serve
ls "$PROFILES"/train/*.profraw >/dev/null 2>&1 || { echo "pgo-build.sh: the proxy wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$PROFILES/keyward.profdata" "$PROFILES"/train/*.profraw

echo "pgo-build.sh: 3/3 optimized build (target/pgo)" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFILES/keyward.profdata" \
  cargo build --release --locked --bin keyward --target-dir target/pgo >&2
echo "pgo-build.sh: built $ROOT/target/pgo/release/keyward" >&2
