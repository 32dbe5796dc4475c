#!/usr/bin/env bash
# Every performance figure of docs/performance.md, in one command:
#
#   bench/run.sh            # ~8 minutes on 2 cores after the release build
#
# Environment knobs: DURATION (load seconds per server, default 10),
# ROUNDS (alternating null/claimguard windows, default 5),
# CONNECTIONS (default 32), PODS (snapshot size, default 100000),
# SKIP_CRITERION=1, SKIP_LOAD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
PODS=${PODS:-100000}
ROUNDS=${ROUNDS:-5}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

say "machine"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(free -g | awk '/Mem:/{print $2}') GB RAM; $(uname -sr); $(rustc --version)"

say "release build"
cargo build --release --quiet --bins --examples
cargo bench --quiet --bench engine --no-run >"$WORK/bench-build.log" 2>&1 || { cat "$WORK/bench-build.log"; exit 1; }
LOADGEN=target/release/examples/loadgen

if [[ -z "${SKIP_CRITERION:-}" ]]; then
    say "criterion: decision, wire, engine, index updates (short measurement)"
    # Only the estimates: criterion's comparisons with an earlier run and its
    # outlier notes are noise for this report.
    cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3 --noplot --discard-baseline 2>&1 \
        | grep -Ev '^\s*(Compiling|Finished|Running|Blocking|Benchmarking)' \
        | grep -Ev '(\(p = |change:|Performance has|No change in performance|Change within noise|^Found [0-9]+ outliers|^ +[0-9]+ \([0-9.]+%\) (low|high)|^\s*$)' \
        | grep -Ev 'thrpt: +\[[-+]' || true
fi

say "index memory (counting allocator) and RSS"
target/release/examples/memory "$PODS" "$PODS"

if [[ -z "${SKIP_LOAD:-}" ]]; then
    say "load: null server vs claimguard serve (${PODS} pods), ${CONNECTIONS} connections, ${DURATION} s each in ${ROUNDS} alternating windows"
    "$LOADGEN" --write-certs "$WORK/certs" >/dev/null
    "$LOADGEN" --write-snapshot "$WORK/cluster.json" --pods "$PODS"
    port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
    wait_up() { # wait until something accepts connections on port $1
        for _ in $(seq 1 600); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
            sleep 0.1
        done
        echo "server on port $1 did not come up" >&2; return 1
    }
    rss() { awk '/VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
    NULL_PORT=$(port)
    "$LOADGEN" --null-server --listen "127.0.0.1:$NULL_PORT" \
        --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/null.log" 2>&1 &
    NULL_PID=$!
    PIDS+=("$NULL_PID")
    wait_up "$NULL_PORT"
    if ! target/release/claimguard serve --help >/dev/null 2>&1; then
        echo "target/release/claimguard has no 'serve' command: nothing to compare with" >&2
        exit 1
    fi
    CG_PORT=$(port)
    START=$(date +%s.%N)
    target/release/claimguard serve --listen "127.0.0.1:$CG_PORT" \
        --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
        --snapshot "$WORK/cluster.json" >"$WORK/claimguard.log" 2>&1 &
    CG_PID=$!
    PIDS+=("$CG_PID")
    wait_up "$CG_PORT"
    echo "claimguard serve: snapshot loaded, listening after $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s; RSS $(rss "$CG_PID") (null server: $(rss "$NULL_PID"))"
    "$LOADGEN" --label null,claimguard --pid "$NULL_PID,$CG_PID" \
        --url "https://127.0.0.1:$NULL_PORT/validate,https://127.0.0.1:$CG_PORT/validate" \
        --ca "$WORK/certs/ca.pem" --connections "$CONNECTIONS" \
        --duration "$DURATION" --rounds "$ROUNDS" | tee "$WORK/load.out"
    echo "claimguard serve RSS after the load: $(rss "$CG_PID")"
    "$LOADGEN" --scrape "https://127.0.0.1:$CG_PORT/metrics" --ca "$WORK/certs/ca.pem" \
        || echo "(no server-side histogram: /metrics did not answer with claimguard_admission_duration_seconds)"
    say "headline"
    awk '/^RESULT label=/{ for(i=2;i<=NF;i++){ split($i,kv,"="); v[kv[1]]=kv[2] } r[v["label"]]=v["rps"]; c[v["label"]]=v["server_cpu_us"] }
         END{ printf "claimguard %d req/s / null %d req/s = %.2f (target >= 0.70); server CPU per request: claimguard %.1f us, null %.1f us\n",
                     r["claimguard"], r["null"], r["claimguard"]/r["null"], c["claimguard"], c["null"] }' "$WORK/load.out"
fi
