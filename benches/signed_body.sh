#!/usr/bin/env bash
# 1 MiB POST bodies through Keyward, end to end: the extra latency of a signed body (held until its digest is
# proven) over a bearer request (body streamed, not buffered), next to nginx-plain as the peer, in one run.
#   direct         the upstream itself (nginx returning 200 "ok")
#   nginx-plain    nginx proxying to it (the peer)
#   keyward-bearer Authorization: Bearer, the body streams through
#   keyward-rfc9421 / keyward-nws4  a distinct signature per request with Content-Digest / x-nd-content-sha256
# Requests are sequential on one keep-alive connection (python3 http.client), ROUNDS per target (default 200),
# after 20 unmeasured ones; the table gives the median and p90 per request. Loopback only; bounded count.
# Usage: benches/signed_body.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
ROUNDS=${1:-200}
WORK=$(mktemp -d /tmp/keyward-body.XXXXXX)
PORT=${KEYWARD_BENCH_PORT:-18200}
UP=$((PORT + 10)); NG=$((PORT + 11))
cleanup() {
  [[ -n "${KW_PID:-}" ]] && kill "$KW_PID" 2>/dev/null || true
  for c in upstream plain; do nginx -c "$WORK/$c.conf" -p "$WORK" -s stop 2>/dev/null || true; done
}
trap cleanup EXIT

keyward_release signed_body.sh
mkdir -p "$WORK/run" "$WORK/logs"
chmod 755 "$WORK"
for c in upstream plain; do
  sed -e "s#@WORK@#$WORK#g" -e "s#@PORT_UPSTREAM@#$UP#g" -e "s#@PORT_NGINX_PLAIN@#$NG#g" \
    "$HARNESS_DIR/conf/nginx-$c.conf.in" >"$WORK/$c.conf"
  # A 1 MiB body must be accepted and kept in memory (nginx runs its workers as nobody: no temp files).
  sed -i "s#^http {#http {\n    client_max_body_size 8m;\n    client_body_buffer_size 2m;#" "$WORK/$c.conf"
  nginx -c "$WORK/$c.conf" -p "$WORK"
done

keyward_bench_store 10 2 "http://127.0.0.1:$UP"
"$BIN" serve >"$WORK/logs/keyward.log" 2>&1 &
KW_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

head -c 1048576 /dev/urandom >"$WORK/body.bin"
N=$((ROUNDS + 20))
for scheme in rfc9421 nws4; do
  "$BIN" sign --scheme "$scheme" --key-id "$CLIENT_ID" --secret "$SECRET" -X POST -d "@$WORK/body.bin" \
    --print-headers --count "$N" "http://127.0.0.1:$PORT/" >"$WORK/$scheme.tsv"
done

python3 - "$WORK" "$PORT" "$NG" "$UP" "$TOKEN" "$ROUNDS" <<'PY'
import http.client, statistics, sys, time
work, port, ng, up, token, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
body = open(f"{work}/body.bin", "rb").read()
def lines(name):
    out = []
    for line in open(f"{work}/{name}.tsv"):
        out.append(dict(kv.split(": ", 1) for kv in line.rstrip("\n").split("\t") if kv))
    return out
targets = [
    ("direct", up, [{}] * (rounds + 20)),
    ("nginx-plain", ng, [{}] * (rounds + 20)),
    ("keyward-bearer", port, [{"Authorization": f"Bearer {token}"}] * (rounds + 20)),
    ("keyward-rfc9421", port, lines("rfc9421")),
    ("keyward-nws4", port, lines("nws4")),
]
results = {}
for name, p, headers in targets:
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
    times = []
    for i, h in enumerate(headers[: rounds + 20]):
        h = dict(h)
        h["Content-Length"] = str(len(body))
        started = time.perf_counter()
        conn.request("POST", "/", body=body, headers=h)
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - started
        if resp.status != 200:
            sys.exit(f"{name}: request {i} got {resp.status}")
        if i >= 20:
            times.append(elapsed * 1000)
    conn.close()
    times.sort()
    results[name] = (statistics.median(times), times[int(len(times) * 0.9)])
base = results["nginx-plain"][0]
print(f"| target ({rounds} sequential 1 MiB POSTs) | median ms | p90 ms | median × nginx-plain | median − keyward-bearer ms |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, (med, p90) in results.items():
    print(f"| {name} | {med:.2f} | {p90:.2f} | {med / base:.2f} | {med - results['keyward-bearer'][0]:+.2f} |")
PY
