#!/usr/bin/env bash
# Before → after on the fast-path rows: two sora-shim binaries measured in turn on the same machine, interleaved
# run by run so that drift hits both alike. Prints a Markdown table (medians over RUNS) on stdout.
#
#   bash benches/ab.sh BEFORE_BINARY AFTER_BINARY        # RUNS=3 DURATION=10 by default
#
# Rows: the disk's fsync floor (a 4 KiB write + fsync loop); the hyper floor (benches/floor.rs), measured next to
# each binary so that each GET figure is read against its own floor; GET /v1/videos/{id} and GET
# /v1/videos?limit=20 at 64 connections; POST /v1/videos JSON at 1 and 16 connections and multipart with a
# ~900 KiB image at 16 (admission only: the backend is unreachable); the same JSON creates to a reachable fake,
# without and with a shadow copy of every one (sample = 1.0) to a second fake, with the CPU each process spent
# per create and the share of creates that got their copy (counted in the shim's own job records, 3 s after the
# load). Needs wrk and python3; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/sora-shim-ab.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

start() {  # name, command...: waits for "listening on http://ADDR"; sets ADDR and LAST_PID
  local out=$WORK/$1.out
  shift
  "$@" >"$out" 2>>"$WORK/servers.log" &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 1 600); do
    ADDR=$(sed -n 's|^listening on http://||p' "$out" | head -n1)
    [ -n "$ADDR" ] && return 0
    sleep 0.1
  done
  echo "server $1 did not start" >&2
  exit 1
}

measure() {  # label, which, connections, wrk args...
  local label=$1 which=$2 conns=$3 threads=2
  shift 3
  [ "$conns" -lt 2 ] && threads=1
  wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 60s --latency "$@" >"$WORK/wrk.txt" 2>&1 || true
  python3 "$ROOT/benches/report.py" parse "$label" "$conns" "$run" "$which" <"$WORK/wrk.txt" >>"$WORK/results.jsonl"
}

python3 - "$WORK" >>"$WORK/fsync.txt" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block, times = os.urandom(4096), []
for i in range(2000):
    t = time.perf_counter()
    os.pwrite(fd, block, (i % 64) * 4096)
    os.fsync(fd)
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f"fsync floor (4 KiB write + fsync, 2000 times): p50 {times[1000]:.2f} ms, p99 {times[1980]:.2f} ms")
PY

# The reference image of the multipart row: a 720x1280 PNG of ~900 KiB (random pixels compress poorly).
python3 - "$WORK/ref.png" <<'PY'
import os, struct, sys, zlib
w, h = 720, 1280
rows = b"".join(b"\x00" + (os.urandom(w * 3 // 3) + bytes(w * 3 - w)) for _ in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY

cat >"$WORK/bench.toml" <<'EOF'
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
EOF

cargo bench -q --locked --bench floor --no-run >/dev/null 2>&1
start floor cargo bench -q --locked --bench floor -- --port 0
FLOOR=$ADDR
start fake python3 "$ROOT/tests/fakes/openai_videos.py" --port 0 --key test-key
FAKE=$ADDR FAKE_PID=$LAST_PID
start candidate python3 "$ROOT/tests/fakes/openai_videos.py" --port 0 --key test-key
CANDIDATE=$ADDR CANDIDATE_PID=$LAST_PID
for f in "$FAKE" "$CANDIDATE"; do curl -sf -XPOST "http://$f/__control/faults" -d '{"steps": 1000000}' >/dev/null; done
{
  printf '%s\n' '[server]' 'poll_after_ms = 2000' '[worker]' 'poll_interval_ms = 60000'
  for b in "fake $FAKE" "candidate $CANDIDATE"; do
    read -r name addr <<<"$b"
    printf '%s\n' "[backends.$name]" 'kind = "mapping"' 'mapping = "openai"' "base_url = \"http://$addr\"" \
      'secrets = { api_key = "BENCH_FAKE_KEY" }'
  done
  printf '%s\n' '[models."sora-2"]' 'backend = "fake"' 'sizes = ["720x1280", "1280x720"]' 'seconds = ["4"]' \
    'shadow = [{ backend = "candidate", sample = 1.0 }]' 'shadow_daily_cap = 100000000'
} >"$WORK/shadow.toml"
grep -v '^shadow' "$WORK/shadow.toml" >"$WORK/peer.toml"
export BENCH_FAKE_KEY=test-key
CREATE='{"model":"sora-2","prompt":"a shadow benchmark fox","seconds":"4","size":"1280x720"}'

ticks() {  # CPU time (user + system, clock ticks) a process has used so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}

cpu_row() {  # label, which, conns, shim pid, then the command that makes the load: where the CPU went, per create
  local label=$1 which=$2 conns=$3 pid=$4 s0 f0 c0
  shift 4
  s0=$(ticks "$pid") f0=$(ticks "$FAKE_PID") c0=$(ticks "$CANDIDATE_PID")
  "$@"
  echo "{\"cpu\": \"$label\", \"which\": \"$which\", \"conns\": $conns, \"run\": $run, \"shim\": $(($(ticks "$pid") - s0)), \
\"fakes\": $(($(ticks "$FAKE_PID") - f0 + $(ticks "$CANDIDATE_PID") - c0)), \"hz\": $(getconf CLK_TCK)}" >>"$WORK/results.jsonl"
}

jobs_in() {  # data dir, "primary" or "copies": the shim's own records of each (a copy is stored once made)
  python3 - "$1/sora-shim.db" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
cond = "shadow_of IS NULL" if sys.argv[2] == "primary" else "shadow_of IS NOT NULL"
print(db.execute(f"SELECT COUNT(*) FROM jobs WHERE {cond}").fetchone()[0])
PY
}

for run in $(seq 1 "$RUNS"); do
  for which in before after; do
    bin=$BEFORE
    [ "$which" = after ] && bin=$AFTER
    rm -rf "$WORK/data" "$WORK/shadow-data" "$WORK/peer-data"
    # The hyper floor (the same JSON from memory, no routing, auth or store), next to each binary's reads.
    measure "floor: GET (same JSON from memory)" "$which" 64 "http://$FLOOR/"
    start "shim-$which" "$bin" serve --config "$WORK/bench.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data"
    SHIM=$ADDR SHIM_PID=$LAST_PID
    : >"$WORK/ids.txt"
    for _ in $(seq 1 100); do
      curl -sf "http://$SHIM/v1/videos" -H 'authorization: Bearer bench' -H 'content-type: application/json' \
        -d '{"prompt":"a polled fox","model":"sora-2-pro","seconds":"4"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' >>"$WORK/ids.txt"
    done
    IDS_FILE=$WORK/ids.txt measure "GET /v1/videos/{id}" "$which" 64 -s benches/get.lua "http://$SHIM"
    measure "GET /v1/videos?limit=20" "$which" 64 -s benches/auth.lua "http://$SHIM/v1/videos?limit=20"
    for conns in 1 16; do
      measure "POST /v1/videos JSON" "$which" "$conns" -s benches/create_json.lua "http://$SHIM/v1/videos"
    done
    IMAGE_FILE=$WORK/ref.png measure "POST /v1/videos multipart + $(($(stat -c %s "$WORK/ref.png") / 1024)) KiB image" \
      "$which" 16 -s benches/create_multipart.lua "http://$SHIM/v1/videos"
    kill "$SHIM_PID"
    wait "$SHIM_PID" 2>/dev/null || true

    # The same creates to a reachable fake without the shadow copy: what "shadow mode is free" is measured against.
    rm -rf "$WORK/peer-data"
    start "peer-$which" "$bin" serve --config "$WORK/peer.toml" --listen 127.0.0.1:0 --data-dir "$WORK/peer-data"
    SHIM=$ADDR SHIM_PID=$LAST_PID
    for conns in 1 16; do
      BENCH_KEY=bench BENCH_BODY=$CREATE cpu_row "POST /v1/videos JSON, to a reachable fake, no shadow" "$which" \
        "$conns" "$SHIM_PID" measure "POST /v1/videos JSON, to a reachable fake, no shadow" "$which" "$conns" \
        -s benches/call.lua "http://$SHIM/v1/videos"
    done
    kill "$SHIM_PID"
    wait "$SHIM_PID" 2>/dev/null || true

    start "shadow-$which" "$bin" serve --config "$WORK/shadow.toml" --listen 127.0.0.1:0 --data-dir "$WORK/shadow-data"
    SHIM=$ADDR SHIM_PID=$LAST_PID
    for conns in 1 16; do
      p0=$(jobs_in "$WORK/shadow-data" primary) c0=$(jobs_in "$WORK/shadow-data" copies)
      BENCH_KEY=bench BENCH_BODY=$CREATE cpu_row "POST /v1/videos JSON, shadow copy of each" "$which" "$conns" \
        "$SHIM_PID" measure "POST /v1/videos JSON, shadow copy of each" "$which" "$conns" \
        -s benches/call.lua "http://$SHIM/v1/videos"
      sleep 3  # copies still queued are made
      p1=$(jobs_in "$WORK/shadow-data" primary) c1=$(jobs_in "$WORK/shadow-data" copies)
      echo "{\"copies\": \"$which $conns\", \"primary\": $((p1 - p0)), \"candidate\": $((c1 - c0))}" >>"$WORK/results.jsonl"
    done
    kill "$SHIM_PID"
    wait "$SHIM_PID" 2>/dev/null || true
  done
done

cat "$WORK/fsync.txt"
python3 "$ROOT/benches/report.py" ab "$WORK/results.jsonl"
