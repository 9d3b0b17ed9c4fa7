#!/usr/bin/env bash
# A perf profile of sora-shim under the polling-read load (GET /v1/videos/{id}, 64 connections, wrk on loopback):
#
#   cargo build --profile profiling && bash benches/profile.sh target/profiling/sora-shim OUT.txt
#
# Starts the binary on an unreachable backend, creates 100 videos, runs wrk for 14 s, records 8 s of it with
# `perf record -g --call-graph dwarf` and writes three text reports: OUT.txt (self time by symbol), OUT.txt.dso
# (by binary: kernel, shim, libc) and OUT.txt.children (time including callees). Needs perf and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "$1")
OUT=$(realpath -m "$2")
W=$(mktemp -d /tmp/sora-shim-profile.XXXXXX)
cat >"$W/bench.toml" <<'T'
[server]
poll_after_ms = 2000
[worker]
poll_interval_ms = 60000
[api]
default_model = "sora-2-pro"
[backends.unreachable]
kind = "mapping"
mapping = "openai"
base_url = "http://127.0.0.1:9"
secrets = { api_key = "HOME" }
[models."sora-2-pro"]
backend = "unreachable"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
T
"$BIN" serve --config "$W/bench.toml" --listen 127.0.0.1:0 --data-dir "$W/data" >"$W/shim.out" 2>"$W/shim.err" &
SP=$!
trap 'kill $SP 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  S=$(sed -n 's|^listening on http://||p' "$W/shim.out")
  [ -n "$S" ] && break
  sleep 0.1
done
for _ in $(seq 1 100); do
  curl -sf "http://$S/v1/videos" -H 'authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"prompt":"a polled fox","seconds":"4"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' >>"$W/ids.txt"
done
IDS_FILE=$W/ids.txt wrk -t2 -c64 -d14s --latency -s benches/get.lua "http://$S" >"$W/wrk.txt" &
WRK=$!
sleep 2
perf record -F 999 -g --call-graph dwarf,16384 -p "$SP" -o "$W/perf.data" -- sleep 8 >/dev/null 2>&1
wait "$WRK" || true
grep Requests/sec "$W/wrk.txt"
report() { perf report -i "$W/perf.data" --stdio -g none "$@" 2>/dev/null | grep -v '^#' | grep -v '^$' || true; }
report --no-children --sort dso | head -12 >"$OUT.dso"
report --no-children --sort symbol | head -80 >"$OUT"
report --children --sort symbol | head -120 >"$OUT.children"
echo "wrote $OUT, $OUT.dso, $OUT.children"
