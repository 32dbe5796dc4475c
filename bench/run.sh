#!/usr/bin/env bash
# Every performance figure of docs/performance.md, in one command:
#
#   bench/run.sh            # ~8 minutes on 2 cores after the release build
#
# Environment knobs: DURATION (load seconds per server, default 10),
# ROUNDS (alternating null/claimguard windows, default 5),
# CONNECTIONS (default 32), PODS (snapshot size, default 100000),
# SKIP_CRITERION=1, SKIP_LOAD=1; for the wrk ceiling run (nginx-light and
# wrk, installed with apt-get when missing): WRK_DURATION (seconds per window,
# default 5), WRK_ROUNDS (default 3), WRK_CONNECTIONS (default 16), SKIP_WRK=1,
# and LOADGEN_LOAD=0 to skip the loadgen comparison and run only wrk;
# TAIL_DELAY_MS (default 4): the below-saturation tail run's random wait
# before each request, 0..TAIL_DELAY_MS ms per connection;
# WORKERS (default 1): worker threads of every server under load, nginx's
# worker processes too (why one: docs/performance.md, "One worker each");
# PROFILE=debug checks the script with a debug build (figures meaningless);
# SKIP_BUILD=1 uses release binaries already built (no criterion).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/ceiling.sh
source bench/ceiling.sh

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
PODS=${PODS:-100000}
ROUNDS=${ROUNDS:-5}
WORKERS=${WORKERS:-1}
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

if [[ "${PROFILE:-release}" == debug ]]; then
    # Only to check the script's mechanics: debug figures mean nothing.
    say "debug build (PROFILE=debug: the figures below are NOT representative)"
    cargo build --quiet --bin claimguard --example loadgen --example memory
    BIN=target/debug
    SKIP_CRITERION=1
elif [[ -n "${SKIP_BUILD:-}" ]]; then
    # Release binaries built beforehand (claimguard, loadgen, memory).
    SKIP_CRITERION=1
    BIN=target/release
else
    say "release build"
    cargo build --release --quiet --bins --examples
    cargo bench --quiet --bench engine --no-run >"$WORK/bench-build.log" 2>&1 || { cat "$WORK/bench-build.log"; exit 1; }
    BIN=target/release
fi
LOADGEN=$BIN/examples/loadgen

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
$BIN/examples/memory "$PODS" "$PODS"

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
    "$LOADGEN" --null-server --workers "$WORKERS" --listen "127.0.0.1:$NULL_PORT" \
        --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/null.log" 2>&1 &
    NULL_PID=$!
    PIDS+=("$NULL_PID")
    wait_up "$NULL_PORT"
    if ! $BIN/claimguard serve --help >/dev/null 2>&1; then
        echo "$BIN/claimguard has no 'serve' command: nothing to compare with" >&2
        exit 1
    fi
    CG_PORT=$(port)
    START=$(date +%s.%N)
    $BIN/claimguard serve --workers "$WORKERS" --listen "127.0.0.1:$CG_PORT" \
        --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
        --snapshot "$WORK/cluster.json" >"$WORK/claimguard.log" 2>&1 &
    CG_PID=$!
    PIDS+=("$CG_PID")
    wait_up "$CG_PORT"
    echo "claimguard serve: snapshot loaded, listening after $(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s; RSS $(rss "$CG_PID") (null server: $(rss "$NULL_PID"))"
    if [[ "${LOADGEN_LOAD:-1}" != 0 ]]; then
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

    if [[ -z "${SKIP_WRK:-}" ]]; then
        WRK_DURATION=${WRK_DURATION:-5}
        WRK_ROUNDS=${WRK_ROUNDS:-3}
        WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
        say "ceiling: nginx vs the null server, the engine-only server and claimguard serve under wrk (1 thread x ${WRK_CONNECTIONS} keep-alive connections, ${WRK_ROUNDS} interleaved ${WRK_DURATION} s windows each)"
        need=()
        command -v wrk >/dev/null || need+=(wrk)
        command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
        if ((${#need[@]})); then
            echo "installing ${need[*]} (apt-get)"
            SUDO=; [[ $(id -u) != 0 ]] && SUDO=sudo
            $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
        fi
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
        "$LOADGEN" --write-reviews "$WORK/reviews"
        NULL_BODY_FILE="$WORK/null-answer.json"
        curl -sk -X POST --data-binary @"$WORK/reviews/claims.json" "https://127.0.0.1:$NULL_PORT/validate" >"$NULL_BODY_FILE" 2>/dev/null \
            || printf '%s' '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}' >"$NULL_BODY_FILE"
        NGINX_PORT=$(port)
        nginx_conf "$WORK/nginx" "$NGINX_PORT" "$NULL_BODY_FILE" "$WORKERS"
        "$NGINX" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >"$WORK/nginx.log" 2>&1 &
        NGINX_PID=$!
        PIDS+=("$NGINX_PID")
        wait_up "$NGINX_PORT"
        ENGINE_PORT=$(port)
        "$LOADGEN" --engine-server --workers "$WORKERS" --snapshot "$WORK/cluster.json" --listen "127.0.0.1:$ENGINE_PORT" \
            --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/engine.log" 2>&1 &
        ENGINE_PID=$!
        PIDS+=("$ENGINE_PID")
        wait_up "$ENGINE_PORT"
        wrk_scripts "$WORK"
        # CPU time (clock ticks) of a server: the process and its children
        # (nginx's workers).
        ticks() { local t=0 p; for p in "$1" $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
        # Voluntary context switches of a server's threads (a worker parking
        # in epoll_wait with nothing to do, mostly).
        switches() { local p; for p in "$1" $(pgrep -P "$1" || true); do cat /proc/"$p"/task/*/status 2>/dev/null; done | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s+0}'; }
        HZ=$(getconf CLK_TCK)
        # label url body pid
        TARGETS=(
            "nginx https://127.0.0.1:$NGINX_PORT/validate claims $NGINX_PID"
            "null https://127.0.0.1:$NULL_PORT/validate claims $NULL_PID"
            "engine https://127.0.0.1:$ENGINE_PORT/validate claims $ENGINE_PID"
            "serve https://127.0.0.1:$CG_PORT/validate claims $CG_PID"
            "nginx-noclaims https://127.0.0.1:$NGINX_PORT/validate noclaims $NGINX_PID"
            "serve-noclaims https://127.0.0.1:$CG_PORT/validate noclaims $CG_PID"
        )
        : >"$WORK/wrk.out"
        for round in $(seq 1 "$WRK_ROUNDS"); do
            for t in "${TARGETS[@]}"; do
                read -r label url body pid <<<"$t"
                before=$(ticks "$pid")
                sw_before=$(switches "$pid")
                wrk -t1 -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --latency -s "$WORK/$body.lua" "$url" >"$WORK/wrk.one" 2>&1 || true
                cpu_s=$(awk -v a="$before" -v b="$(ticks "$pid")" -v hz="$HZ" 'BEGIN { printf "%.3f", (b-a)/hz }')
                sw=$(($(switches "$pid") - sw_before))
                # Requests/sec, p99 in ms, non-2xx count.
                awk -v label="$label" -v round="$round" -v cpu="$cpu_s" -v sw="$sw" -v dur="$WRK_DURATION" '
                    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /[0-9]s$/) return v*1000; if (v ~ /m$/) return v*60000; return v }
                    /Requests\/sec:/ { rps = $2 }
                    /^ +99%/ { p99 = ms($2) }
                    /Non-2xx/ { bad = $NF }
                    END { printf "WRK label=%s round=%d rps=%.0f p99_ms=%.2f non2xx=%d server_cpu_us=%.1f switches_per_req=%.3f\n", label, round, rps, p99, bad, (rps > 0 ? cpu * 1e6 / (rps * dur) : 0), (rps > 0 ? sw / (rps * dur) : 0) }' "$WORK/wrk.one" | tee -a "$WORK/wrk.out"
            done
        done
        say "ceiling ratios (mean req/s over the rounds; load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
        awk '/^WRK /{ for(i=2;i<=NF;i++){ split($i,kv,"="); v[kv[1]]=kv[2] } s[v["label"]]+=v["rps"]; n[v["label"]]++; if (v["p99_ms"]>p[v["label"]]) p[v["label"]]=v["p99_ms"]; b[v["label"]]+=v["non2xx"]; c[v["label"]]+=v["server_cpu_us"] }
             END{ for (l in s) r[l]=s[l]/n[l]
                  order="nginx null engine serve nginx-noclaims serve-noclaims"; k=split(order, o, " ")
                  for (i=1;i<=k;i++) printf "%-15s %8.0f req/s  worst p99 %6.2f ms  non-2xx %d  server CPU %5.1f us/request\n", o[i], r[o[i]], p[o[i]], b[o[i]], c[o[i]]/n[o[i]]
                  printf "null / nginx                        = %.2f\n", r["null"]/r["nginx"]
                  printf "engine / nginx                      = %.2f\n", r["engine"]/r["nginx"]
                  printf "serve / nginx                       = %.2f (target >= 0.7, goal 0.8)\n", r["serve"]/r["nginx"]
                  printf "serve / engine                      = %.2f (target >= 0.9)\n", r["serve"]/r["engine"]
                  printf "serve, pod without claims / nginx   = %.2f (target >= 0.8)\n", r["serve-noclaims"]/r["nginx-noclaims"]
             }' "$WORK/wrk.out"
        # wrk keeps every connection busy, so its p99 above is queueing at
        # saturation. The tail below saturation: the same wrk, 16 connections,
        # each waiting a random 0..TAIL_DELAY_MS ms (default 4, mean 2)
        # before its next request: about 40 % of serve's saturated rate on
        # this machine. The random wait keeps the connections from firing in
        # step (a fixed wait sends all 16 in the same timer tick, a burst that
        # nginx's own p99 shows). nginx in the same run is the ceiling.
        TAIL_DELAY_MS=${TAIL_DELAY_MS:-4}
        for f in claims noclaims; do
            sed "s|^fh:close()|fh:close()\nfunction delay() return math.random(0, $TAIL_DELAY_MS) end|" \
                "$WORK/$f.lua" >"$WORK/$f-paced.lua"
        done
        say "tail below saturation: wrk, ${WRK_CONNECTIONS} connections, a random 0-${TAIL_DELAY_MS} ms wait before each request, ${WRK_DURATION} s each"
        TAIL_TARGETS=(
            "nginx https://127.0.0.1:$NGINX_PORT/validate claims"
            "serve https://127.0.0.1:$CG_PORT/validate claims"
            "nginx-noclaims https://127.0.0.1:$NGINX_PORT/validate noclaims"
            "serve-noclaims https://127.0.0.1:$CG_PORT/validate noclaims"
        )
        for t in "${TAIL_TARGETS[@]}"; do
            read -r label url body <<<"$t"
            wrk -t1 -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --latency -s "$WORK/$body-paced.lua" "$url" >"$WORK/wrk.one" 2>&1 || true
            awk -v label="$label" '
                function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /[0-9]s$/) return v*1000; return v }
                /Requests\/sec:/ { rps = $2 }
                /^ +50%/ { p50 = ms($2) }
                /^ +99%/ { p99 = ms($2) }
                /Non-2xx/ { bad = $NF }
                END { printf "TAIL label=%s rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d\n", label, rps, p50, p99, bad }' "$WORK/wrk.one"
        done
        echo "(target: serve p99 < 2 ms at 16 connections below saturation)"
    fi
fi
