#!/usr/bin/env bash
# User-space instructions per request of whole `claimguard serve` processes
# (TLS, HTTP, review, metrics, log line), counted by callgrind while wrk
# drives them: unlike req/s or CPU time on this shared two-core machine, the
# count does not move with other load, so it is the A/B figure for changes
# to the server. The kernel's share (system calls, loopback) is not counted.
#
#   bench/instructions.sh [BINARY ...]   # default: target/release/claimguard
#
# Needs valgrind and wrk (apt-get install valgrind wrk) and the release
# examples (cargo build --release --examples). PODS (default 10000) sizes the
# snapshot; SECONDS_EACH (default 10) the counted wrk run per body.
set -euo pipefail
cd "$(dirname "$0")/.."
PODS=${PODS:-10000}
SECONDS_EACH=${SECONDS_EACH:-10}
LOADGEN=target/release/examples/loadgen
[[ $# -gt 0 ]] || set -- target/release/claimguard
for tool in valgrind callgrind_control wrk; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind wrk)" >&2; exit 1; }
done
WORK=$(mktemp -d)
PID=
cleanup() {
    [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$LOADGEN" --write-certs "$WORK/certs" >/dev/null
"$LOADGEN" --write-snapshot "$WORK/cluster.json" --pods "$PODS" >/dev/null
"$LOADGEN" --write-reviews "$WORK/reviews" >/dev/null
for f in claims noclaims; do
    cat >"$WORK/$f.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local fh = io.open("$WORK/reviews/$f.json", "rb")
wrk.body = fh:read("*a")
fh:close()
LUA
done
PORT=18471
for bin in "$@"; do
    for body in claims noclaims; do
        rm -f "$WORK"/cg.out*
        # Instrumentation off through start-up (the snapshot load), on only
        # for the counted run.
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
            "$bin" serve --listen "127.0.0.1:$PORT" --tls-cert "$WORK/certs/tls.crt" \
            --tls-key "$WORK/certs/tls.key" --snapshot "$WORK/cluster.json" >"$WORK/serve.log" 2>&1 &
        PID=$!
        for _ in $(seq 120); do grep -q 'serving admission' "$WORK/serve.log" && break; sleep 1; done
        # Warm-up: connections, allocator pages, lazily built statics.
        wrk -t1 -c4 -d3s -s "$WORK/$body.lua" "https://127.0.0.1:$PORT/validate" >/dev/null 2>&1
        callgrind_control -i on "$PID" >/dev/null 2>&1
        wrk -t1 -c4 -d"${SECONDS_EACH}s" -s "$WORK/$body.lua" "https://127.0.0.1:$PORT/validate" >"$WORK/wrk.out" 2>&1
        callgrind_control -i off "$PID" >/dev/null 2>&1
        callgrind_control -d "$PID" >/dev/null 2>&1
        kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
        n=$(awk '/requests in/{print $1}' "$WORK/wrk.out")
        ins=$(cat "$WORK"/cg.out* | awk '/^totals:/{s+=$2} END{print s+0}')
        bad=$(awk '/Non-2xx/{print $NF}' "$WORK/wrk.out")
        printf '%-40s %-8s %6d requests  %8d instructions/request%s\n' "$bin" "$body" "$n" $((ins / n)) "${bad:+  NON-2XX $bad}"
        PORT=$((PORT + 1))
    done
done
