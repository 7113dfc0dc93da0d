# Shared by the bench scripts (sourced from the project root, not run): where the peer harness is, the release
# build, and Keyward's bench config.

# The shared load harness (../shared/bench beside the project), or BENCH_HARNESS_DIR.
HARNESS_DIR=${BENCH_HARNESS_DIR:-$PWD/../shared/bench}

# keyward_release NAME: build Keyward in release mode (NAME says who asks) and set BIN to the binary. With
# KEYWARD_BENCH_PGO=1, the profile-guided build of scripts/pgo-build.sh (the one the Docker image ships).
keyward_release() {
  if [[ "${KEYWARD_BENCH_PGO:-0}" == 1 ]]; then
    echo "$1: building keyward (release, profile-guided: scripts/pgo-build.sh)" >&2
    bash scripts/pgo-build.sh
    BIN=$PWD/target/pgo/release/keyward
  else
    echo "$1: building keyward (release)" >&2
    cargo build --release --locked --bin keyward >&2
    BIN=$PWD/target/release/keyward
  fi
}
#
# keyward_bench_config FILE PORT STORE [UPSTREAM_URL] writes a config with the proxy on 127.0.0.1:PORT, the admin
# API on PORT + 1 and the SQLite store at STORE. Like the peers it keeps no access log. Requests are signed
# before the runs, so the signature window is widened to 900 s, and the replay window holds every request of a
# run. Without UPSTREAM_URL the upstream comes from the environment (KEYWARD_UPSTREAM__URL).
keyward_bench_config() {
  local file=$1 port=$2 store=$3 upstream=${4:-}
  {
    printf '[proxy]\nlisten = "127.0.0.1:%s"\n' "$port"
    printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$((port + 1))"
    printf '[store]\npath = "%s"\n' "$store"
    if [[ -n "$upstream" ]]; then
      printf '[upstream]\nurl = "%s"\n' "$upstream"
    fi
    printf '[auth]\nclock_skew = "900s"\nreplay_max_entries = 4000000\n'
    printf '[log]\nlevel = "warn"\naccess_log = false\n'
  } >"$file"
}

# keyward_bench_store COUNT LINE UPSTREAM_URL: in $WORK, the harness's COUNT bench keys, a bench config on $PORT
# (kw.toml, exported as KEYWARD_CONFIG) and a store with the keys imported; CLIENT_ID, SECRET and TOKEN are those
# of the key on line LINE of keys.tsv (line 1 is the header).
keyward_bench_store() {
  python3 "$HARNESS_DIR/lib/gen_keys.py" "$1" "$WORK/keys" >/dev/null
  read -r CLIENT_ID SECRET TOKEN < <(awk -F'\t' -v line="$2" 'NR == line { print $1, $2, $3 }' "$WORK/keys/keys.tsv")
  keyward_bench_config "$WORK/kw.toml" "$PORT" "$WORK/keyward.db" "$3"
  export KEYWARD_CONFIG=$WORK/kw.toml
  "$BIN" keys import "$WORK/keys/keys.tsv" >&2
}

# bench_require NAME TOOL...: exit, saying so for NAME (the script), unless every TOOL is installed.
bench_require() {
  local name=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: $tool is not installed" >&2; exit 1; }
  done
}

# bench_cleanup PID: on exit, stop the Keyward process PID names (if set) and the upstream of bench_upstream_start.
bench_cleanup() {
  [[ -n "${1:-}" ]] && kill "$1" 2>/dev/null || true
  [[ -n "${UPSTREAM_PID:-}" ]] && kill "$UPSTREAM_PID" 2>/dev/null || true
}

# bench_upstream_start PORT: the harness's nginx upstream on 127.0.0.1:PORT, pinned to core 1, its files in $WORK
# (stopped by bench_cleanup). It stays in the script's session (`daemon off`), as the harness runs it: a process
# that daemonizes gets a scheduler autogroup of its own, and then the CPU share its core gives it against the load
# generator depends on what else runs in the script's group (benches/latency.sh's header says what that did).
bench_upstream_start() {
  mkdir -p "$WORK/run" "$WORK/logs"
  chmod 755 "$WORK"
  sed -e "s#@WORK@#$WORK#g" -e "s#@PORT_UPSTREAM@#$1#g" "$HARNESS_DIR/conf/nginx-upstream.conf.in" >"$WORK/upstream.conf"
  taskset -c 1 nginx -c "$WORK/upstream.conf" -p "$WORK" -g 'daemon off;' >"$WORK/logs/upstream.out" 2>&1 &
  UPSTREAM_PID=$!
  bench_wait_http "$1" || {
    echo "bench: the upstream did not come up on port $1 (see $WORK/logs/upstream.out)" >&2
    return 1
  }
}

# bench_nginx_plain_conf DIR PORT UPSTREAM_PORT: the harness's nginx-plain configuration for 127.0.0.1:PORT in
# DIR/plain.conf, its pid, logs and temporary files under DIR. Run it in the script's session, with
# `-g 'daemon off;'`, for the reason bench_upstream_start gives.
bench_nginx_plain_conf() {
  mkdir -p "$1/run" "$1/logs"
  sed -e "s#@WORK@#$1#g" -e "s#@PORT_UPSTREAM@#$3#g" -e "s#@PORT_NGINX_PLAIN@#$2#g" \
    "$HARNESS_DIR/conf/nginx-plain.conf.in" >"$1/plain.conf"
}

# bench_wait_http PORT [CURL_ARG...]: wait up to 10 s until http://127.0.0.1:PORT/ answers; fail if it never does.
bench_wait_http() {
  local port=$1 n
  shift
  for n in $(seq 100); do
    curl -s -o /dev/null "$@" "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  return 1
}

# bench_sign COUNT: $WORK/rfc9421.tsv and $WORK/nws4.tsv, COUNT distinct signed GETs of http://127.0.0.1:$PORT/ each,
# one request's headers per line (the harness's bench.lua format), with the key from keyward_bench_store.
bench_sign() {
  local scheme
  for scheme in rfc9421 nws4; do
    "$BIN" sign --scheme "$scheme" --key-id "$CLIENT_ID" --secret "$SECRET" --print-headers --count "$1" \
      "http://127.0.0.1:$PORT/" >"$WORK/$scheme.tsv"
  done
}
