#!/usr/bin/env bash
# Soak: ten minutes (SOAK_SECS) of admission load with pod churn through the
# fake API server, dropped/cut watches, 410 Gone, certificate rotation and
# policy reloads every minute. Prints RSS, requests, errors and p99 per 30 s
# window, then checks that the live index equals a fresh build.
#
#   bash bench/soak.sh            # 600 s
#   SOAK_SECS=120 bash bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECS="${SOAK_SECS:-600}"
cargo test --release --locked --test soak -- --ignored --nocapture soak_long
