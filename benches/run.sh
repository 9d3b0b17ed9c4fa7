#!/usr/bin/env bash
# One command for every benchmark, side by side in one run, loopback only; writes BENCHMARKS.md.
#
#   bash benches/run.sh            # RUNS=3 DURATION=10 by default; medians over RUNS
#
# Needs wrk, nginx, ffmpeg and sqlite3 (Debian packages; installed here if missing and we are root).
# Every server it starts listens on 127.0.0.1 and is stopped at the end; every load is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/sora-shim-bench.XXXXXX)
chmod 755 "$WORK"  # nginx's worker user reads the file it serves from here
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

need=()
for tool in wrk nginx ffmpeg sqlite3; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^nginx$/nginx-light/')
  [ "$(id -u)" -eq 0 ] || { echo "missing: ${need[*]} (install them)"; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi

echo "== building (release)"
cargo build --release --locked --bin sora-shim 2>&1 | tail -1
cargo bench --locked --bench floor --no-run 2>&1 | tail -1
SHIM_BIN=$ROOT/target/release/sora-shim

# Starts "$@" in the background; waits for its "listening on http://ADDR" line; sets ADDR.
start() {
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
  echo "server $1 did not start"; exit 1
}

# wrk, RUNS times; appends one JSON line per run to $WORK/results.jsonl with the scenario name.
measure() {
  local name=$1 conns=$2
  shift 2
  for run in $(seq 1 "$RUNS"); do
    local threads=2
    [ "$conns" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 60s --latency "$@" >"$WORK/wrk.txt" 2>&1 || true
    python3 "$ROOT/benches/report.py" parse "$name" "$conns" "$run" <"$WORK/wrk.txt" >>"$WORK/results.jsonl"
  done
}

cat >"$WORK/bench.toml" <<'EOF'
[server]
poll_after_ms = 2000
[worker]
poll_interval_ms = 200
[backends.local]
kind = "local"
fps = 4
concurrent_renders = 1
# Creates are measured up to admission (validated, persisted, answered): this backend is never reachable, so
# dispatch only retries in the background and does not compete for the CPU.
[backends.unreachable]
kind = "mapping"
mapping = "openai"
base_url = "http://127.0.0.1:9"
secrets = { api_key = "HOME" }
[models."sora-2"]
backend = "local"
sizes = ["720x1280", "1280x720"]
seconds = ["4", "8", "12", "16", "20"]
[models."sora-2-pro"]
backend = "unreachable"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
EOF

echo "== starting sora-shim and the floor"
start shim "$SHIM_BIN" serve --config "$WORK/bench.toml" --listen 127.0.0.1:0 --data-dir "$WORK/data"
SHIM=$ADDR SHIM_PID=$LAST_PID
start floor cargo bench -q --locked --bench floor -- --port 0
FLOOR=$ADDR

echo "== seeding: 60 finished and 40 unfinished videos"
: >"$WORK/ids.txt"
create() {
  curl -sf "http://$SHIM/v1/videos" -H 'authorization: Bearer bench' -H 'content-type: application/json' -d "$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
for i in $(seq 1 60); do create "{\"prompt\":\"finished $i\",\"seconds\":\"4\"}" >>"$WORK/ids.txt"; done
python3 - "$SHIM" "$WORK/ids.txt" <<'PY'
import json, sys, time, urllib.request
addr, path = sys.argv[1], sys.argv[2]
ids = open(path).read().split()
deadline = time.time() + 600
while time.time() < deadline:
    done = 0
    for i in ids:
        req = urllib.request.Request(f"http://{addr}/v1/videos/{i}", headers={"Authorization": "Bearer bench"})
        done += json.load(urllib.request.urlopen(req))["status"] == "completed"
    if done == len(ids):
        break
    time.sleep(1)
PY
for i in $(seq 1 40); do create "{\"prompt\":\"unfinished $i\",\"model\":\"sora-2-pro\",\"seconds\":\"4\"}" >>"$WORK/ids.txt"; done

echo "== polling reads"
measure "floor: GET (same JSON from memory)" 64 "http://$FLOOR/"
IDS_FILE=$WORK/ids.txt measure "shim: GET /v1/videos/{id} (60% finished)" 64 -s benches/get.lua "http://$SHIM"
measure "shim: GET /v1/videos?limit=20" 64 -s benches/auth.lua "http://$SHIM/v1/videos?limit=20"

echo "== creates (admission: validate, persist with fsync, answer)"
python3 - "$WORK/ref.png" <<'PY'
import os, struct, sys, zlib
w, h = 720, 1280
rows = b"".join(b"\x00" + (os.urandom(w * 3 // 3) + bytes(w * 3 - w)) for _ in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
measure "shim: POST /v1/videos JSON" 16 -s benches/create_json.lua "http://$SHIM/v1/videos"
IMAGE_FILE=$WORK/ref.png measure "shim: POST /v1/videos multipart + $(($(stat -c %s "$WORK/ref.png") / 1024)) KiB image" 16 \
  -s benches/create_multipart.lua "http://$SHIM/v1/videos"

echo "== content delivery: one 50 MB MP4, shim vs nginx (sendfile)"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=24 -t 20 -pix_fmt yuv420p -c:v libx264 -preset ultrafast \
  -b:v 20M -maxrate 20M -bufsize 40M "$WORK/big.mp4"
BIG=$(head -n1 "$WORK/ids.txt")
# The shim serves whatever file its record points at: put the 50 MB file in place of a finished video's asset.
cp "$WORK/big.mp4" "$WORK/data/assets/$BIG/video.mp4"
mkdir -p "$WORK/www" && cp "$WORK/big.mp4" "$WORK/www/big.mp4" && chmod -R a+rX "$WORK/www"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  server { listen 127.0.0.1:18571; root $WORK/www; }
}
EOF
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
sleep 0.5
for conns in 1 200; do
  measure "nginx: GET 50 MB file" "$conns" "http://127.0.0.1:18571/big.mp4"
  echo 5 >/proc/"$SHIM_PID"/clear_refs  # resets the peak (VmHWM) to the current RSS
  before=$(grep VmHWM /proc/"$SHIM_PID"/status | awk '{print $2}')
  measure "shim: GET /v1/videos/{id}/content (50 MB)" "$conns" -s benches/auth.lua "http://$SHIM/v1/videos/$BIG/content"
  after=$(grep VmHWM /proc/"$SHIM_PID"/status | awk '{print $2}')
  echo "{\"memory\": \"shim peak RSS during $conns concurrent 50 MB downloads\", \"before_kib\": $before, \"after_kib\": $after}" >>"$WORK/results.jsonl"
done
kill "$SHIM_PID" 2>/dev/null || true

echo "== scale of state: 10k, 100k, 1M stored jobs"
for n in 10000 100000 1000000; do
  rm -rf "$WORK/scale" && mkdir -p "$WORK/scale"
  cp "$WORK/data/sora-shim.db" "$WORK/scale/sora-shim.db" 2>/dev/null || true
  python3 "$ROOT/benches/report.py" seed "$WORK/data/sora-shim.db" "$WORK/scale/sora-shim.db" "$n" "$WORK/scale-ids.txt"
  start "scale$n" "$SHIM_BIN" serve --config "$WORK/bench.toml" --listen 127.0.0.1:0 --data-dir "$WORK/scale"
  sleep 1
  rss=$(grep VmRSS /proc/"$LAST_PID"/status | awk '{print $2}')
  IDS_FILE=$WORK/scale-ids.txt measure "shim: GET /v1/videos/{id} with $n jobs stored" 64 -s benches/get.lua "http://$ADDR"
  rss_after=$(grep VmRSS /proc/"$LAST_PID"/status | awk '{print $2}')
  echo "{\"memory\": \"shim RSS with $n jobs stored (at start / after the read load)\", \"before_kib\": $rss, \"after_kib\": $rss_after}" >>"$WORK/results.jsonl"
  kill "$LAST_PID"
done

python3 "$ROOT/benches/report.py" write "$WORK/results.jsonl" "$RUNS" "$DURATION" >"$ROOT/BENCHMARKS.md"
echo "== wrote BENCHMARKS.md"
