#!/usr/bin/env bash
# User-space instructions per request of whole `claimguard serve` processes
# (TLS, HTTP, review, metrics, log line), counted by callgrind while wrk
# drives them: unlike req/s or CPU time on this shared two-core machine, the
# count does not move with other load, so it is the A/B figure for changes
# to the server. The kernel's share (system calls, loopback) is not counted.
#
#   bench/instructions.sh                # nginx, the null server, the engine-only
#                                        # server and target/profiling/claimguard
#   bench/instructions.sh BINARY ...     # claimguard binaries side by side
#
# nginx (one process: master_process off) answering a fixed body over the
# same certificate is the outside ceiling, as in bench/run.sh.
# Needs valgrind, wrk and, for the ceiling, nginx (apt-get install valgrind
# wrk nginx-light) and the profiling build of the binary and examples
# (cargo build --profile profiling --bins --examples: the release build with
# symbols, so callgrind's per-function counts have names). PODS (default 10000) sizes the snapshot; SECONDS_EACH
# (default 10) the counted wrk run per body.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ceiling.sh
source bench/ceiling.sh
PODS=${PODS:-10000}
SECONDS_EACH=${SECONDS_EACH:-10}
LOADGEN=target/profiling/examples/loadgen
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
wrk_scripts "$WORK"
PORT=18471
wait_up() { # until something accepts connections on port $1
    for _ in $(seq 1 1200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2; return 1
}
# count LABEL BODY COMMAND...: COMMAND listens on $PORT; prints its
# user-space instructions per request for the review BODY.
count() {
    local label=$1 body=$2
    shift 2
    rm -f "$WORK"/cg.out*
    # Instrumentation off through start-up (the snapshot load), on only for
    # the counted run.
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.out" \
        "$@" >"$WORK/server.log" 2>&1 &
    PID=$!
    wait_up "$PORT"
    # Warm-up: connections, allocator pages, lazily built statics.
    wrk -t1 -c4 -d3s -s "$WORK/$body.lua" "https://127.0.0.1:$PORT/validate" >/dev/null 2>&1
    callgrind_control -i on "$PID" >/dev/null 2>&1
    wrk -t1 -c4 -d"${SECONDS_EACH}s" -s "$WORK/$body.lua" "https://127.0.0.1:$PORT/validate" >"$WORK/wrk.out" 2>&1
    callgrind_control -i off "$PID" >/dev/null 2>&1
    callgrind_control -d "$PID" >/dev/null 2>&1
    kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
    local n ins bad
    n=$(awk '/requests in/{print $1}' "$WORK/wrk.out")
    ins=$(cat "$WORK"/cg.out* | awk '/^totals:/{s+=$2} END{print s+0}')
    bad=$(awk '/Non-2xx/{print $NF}' "$WORK/wrk.out")
    printf '%-40s %-8s %6d requests  %8d instructions/request%s\n' "$label" "$body" "$n" $((ins / n)) "${bad:+  NON-2XX $bad}"
    echo "$label $body $((ins / n))" >>"$WORK/results"
    PORT=$((PORT + 1))
}
TLS=(--tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key")
serve() { # serve BINARY BODY
    count "$1" "$2" "$1" serve --listen "127.0.0.1:$PORT" "${TLS[@]}" --snapshot "$WORK/cluster.json"
}
if [[ $# -gt 0 ]]; then
    for bin in "$@"; do
        for body in claims noclaims; do serve "$bin" "$body"; done
    done
    exit 0
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
printf '%s' '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}' >"$WORK/answer.json"
for body in claims noclaims; do
    if [[ -x "$NGINX" ]]; then
        nginx_conf "$WORK/nginx" "$PORT" "$WORK/answer.json" single
        count nginx "$body" "$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
    fi
    count null "$body" "$LOADGEN" --null-server --listen "127.0.0.1:$PORT" "${TLS[@]}"
    count engine-only "$body" "$LOADGEN" --engine-server --snapshot "$WORK/cluster.json" \
        --listen "127.0.0.1:$PORT" "${TLS[@]}"
    serve target/profiling/claimguard "$body"
done
# Instruction ratios, read like the throughput ratios (higher is better for
# serve): the cheaper server's count over the dearer one's.
awk '{ k[$1 "/" $2] = $3 }
     END {
       s = "target/profiling/claimguard"
       if (k["nginx/claims"]) printf "nginx / serve, two-claim review      = %.2f\n", k["nginx/claims"] / k[s "/claims"]
       printf "engine-only / serve                  = %.2f\n", k["engine-only/claims"] / k[s "/claims"]
       if (k["nginx/noclaims"]) printf "nginx / serve, claimless pod         = %.2f\n", k["nginx/noclaims"] / k[s "/noclaims"]
       printf "null / serve, claimless pod          = %.2f\n", k["null/noclaims"] / k[s "/noclaims"]
     }' "$WORK/results"
