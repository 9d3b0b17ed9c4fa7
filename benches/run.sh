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

echo "== a peer: the same reads and creates through LiteLLM's proxy, and through the shim, to one fake backend"
# The fake is tests/fakes/openai_videos.py (Python, a thread per connection); its direct figures are in the
# table, so it visibly is not what limits the shim's rows. The shim calls the backend in the background
# (dispatch, polling), so its rows measure what its clients wait for; LiteLLM forwards each call.
LITELLM_VENV=$ROOT/target/bench-litellm-venv
if [ ! -x "$LITELLM_VENV/bin/litellm" ] || ! cmp -s benches/litellm-requirements.txt "$LITELLM_VENV/.requirements"; then
  rm -rf "$LITELLM_VENV" && python3 -m venv "$LITELLM_VENV"
  "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check -r benches/litellm-requirements.txt
  cp benches/litellm-requirements.txt "$LITELLM_VENV/.requirements"
fi
start fake python3 "$ROOT/tests/fakes/openai_videos.py" --port 0 --key test-key
FAKE=$ADDR
start shadowfake python3 "$ROOT/tests/fakes/openai_videos.py" --port 0 --key test-key
SHADOW_FAKE=$ADDR
printf '%s\n' \
  'model_list:' \
  '  - model_name: sora-2' \
  "    litellm_params: {model: openai/sora-2, api_base: \"http://$FAKE/v1\", api_key: test-key}" \
  'general_settings: {master_key: sk-bench}' \
  'litellm_settings: {telemetry: false}' >"$WORK/litellm.yaml"
LITELLM_TELEMETRY=False LITELLM_LOCAL_MODEL_COST_MAP=True "$LITELLM_VENV/bin/litellm" --config "$WORK/litellm.yaml" \
  --host 127.0.0.1 --port 18572 >"$WORK/litellm.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:18572/health/liveliness >/dev/null && break; sleep 0.2; done
LITELLM=127.0.0.1:18572
curl -sf -XPOST "http://$FAKE/__control/reset" >/dev/null  # LiteLLM's start-up probe of /v1/models
# Jobs stay in progress at the fakes (and the shim polls once a minute): the shim's background work per create is
# its one dispatch call, not a video ingest, so both proxies make the same one provider call per create.
for f in "$FAKE" "$SHADOW_FAKE"; do
  curl -sf -XPOST "http://$f/__control/faults" -d '{"steps": 1000000}' >/dev/null
done
peer_config() {  # $1 = shadow: every create is also copied to a second fake
  printf '%s\n' '[server]' 'poll_after_ms = 2000' '[worker]' 'poll_interval_ms = 60000'
  for b in "fake $FAKE" "candidate $SHADOW_FAKE"; do
    read -r name addr <<<"$b"
    printf '%s\n' "[backends.$name]" 'kind = "mapping"' 'mapping = "openai"' "base_url = \"http://$addr\"" \
      'secrets = { api_key = "BENCH_FAKE_KEY" }'
  done
  printf '%s\n' '[models."sora-2"]' 'backend = "fake"' 'sizes = ["720x1280", "1280x720"]' 'seconds = ["4"]'
}
peer_config >"$WORK/peer.toml"
{ peer_config; printf '%s\n' 'shadow = [{ backend = "candidate", sample = 1.0 }]' 'shadow_daily_cap = 100000000'; } \
  >"$WORK/peer-shadow.toml"
export BENCH_FAKE_KEY=test-key
start peershim "$SHIM_BIN" serve --config "$WORK/peer.toml" --listen 127.0.0.1:0 --data-dir "$WORK/peer"
PEER_SHIM=$ADDR PEER_PID=$LAST_PID
CREATE='{"model":"sora-2","prompt":"a peer benchmark fox","seconds":"4","size":"1280x720"}'
create_at() {  # $1 = address, $2 = key: prints the new video's id
  curl -sf "http://$1/v1/videos" -H "authorization: Bearer $2" -H 'content-type: application/json' -d "$CREATE" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
FAKE_ID=$(create_at "$FAKE" test-key)
LITELLM_ID=$(create_at "$LITELLM" sk-bench)
SHIM_ID=$(create_at "$PEER_SHIM" bench)
for conns in 1 16; do
  BENCH_KEY=test-key measure "fake directly: GET /v1/videos/{id}" "$conns" -s benches/call.lua "http://$FAKE/v1/videos/$FAKE_ID"
  BENCH_KEY=sk-bench measure "LiteLLM → fake: GET /v1/videos/{id}" "$conns" -s benches/call.lua \
    "http://$LITELLM/v1/videos/$LITELLM_ID"
  BENCH_KEY=bench measure "shim → fake: GET /v1/videos/{id}" "$conns" -s benches/call.lua "http://$PEER_SHIM/v1/videos/$SHIM_ID"
done
export BENCH_BODY=$CREATE
for conns in 1 16; do
  BENCH_KEY=test-key measure "fake directly: POST /v1/videos JSON" "$conns" -s benches/call.lua "http://$FAKE/v1/videos"
  BENCH_KEY=sk-bench measure "LiteLLM → fake: POST /v1/videos JSON" "$conns" -s benches/call.lua "http://$LITELLM/v1/videos"
  BENCH_KEY=bench measure "shim → fake: POST /v1/videos JSON" "$conns" -s benches/call.lua "http://$PEER_SHIM/v1/videos"
done
# Open-loop: a fixed rate, latency counted from each request's scheduled time (wrk above is closed-loop).
RATE_FIXED=${CREATE_RATE:-50}
for run in $(seq 1 "$RUNS"); do
  for target in "fake directly|$FAKE|test-key" "LiteLLM → fake|$LITELLM|sk-bench" "shim → fake|$PEER_SHIM|bench"; do
    IFS='|' read -r label addr key <<<"$target"
    python3 "$ROOT/benches/rate.py" "$label: POST /v1/videos JSON" "$RATE_FIXED" "$DURATION" "http://$addr/v1/videos" \
      "$key" "$CREATE" >>"$WORK/results.jsonl"
  done
done
kill "$PEER_PID" 2>/dev/null || true
start shadowshim "$SHIM_BIN" serve --config "$WORK/peer-shadow.toml" --listen 127.0.0.1:0 --data-dir "$WORK/peer-shadow"
for conns in 1 16; do
  BENCH_KEY=bench measure "shim → fake, shadow copy of every create: POST JSON" "$conns" -s benches/call.lua \
    "http://$ADDR/v1/videos"
done
kill "$LAST_PID" 2>/dev/null || true
unset BENCH_BODY

echo "== 10k unfinished jobs polled through a rate-limited backend"
# The fake refuses (429) API calls beyond RATE in any one-second window, and the shim's backend is configured
# with requests_per_second = RATE. Every job must complete; the fake counts the calls it had to refuse.
RATE=${POLL_RATE:-200}
JOBS=${POLL_JOBS:-10000}
curl -sf -XPOST "http://$FAKE/__control/reset" >/dev/null
curl -sf -XPOST "http://$FAKE/__control/faults" -d "{\"rate_limit_rps\": $RATE, \"steps\": 2}" >/dev/null
# The openai mapping with one small size and length added, so that 10k finished videos stay cheap to store.
sed -e 's/^sizes = {/sizes = { "160x96" = "160x96", /' -e 's/^seconds = {/seconds = { "1" = "1", /' \
  "$ROOT/mappings/openai.toml" >"$WORK/openai-small.toml"
printf '%s\n' '[server]' 'poll_after_ms = 2000' '[worker]' 'poll_interval_ms = 1000' '[backends.fake]' \
  'kind = "mapping"' "mapping = \"$WORK/openai-small.toml\"" "base_url = \"http://$FAKE\"" \
  'secrets = { api_key = "BENCH_FAKE_KEY" }' \
  "requests_per_second = $RATE" '[api]' 'default_model = "sora-2"' 'default_size = "160x96"' 'default_seconds = "1"' \
  '[models."sora-2"]' 'backend = "fake"' 'sizes = ["160x96"]' 'seconds = ["1"]' >"$WORK/poll.toml"
start pollshim "$SHIM_BIN" serve --config "$WORK/poll.toml" --listen 127.0.0.1:0 --data-dir "$WORK/poll"
POLL_PID=$LAST_PID
python3 "$ROOT/benches/report.py" poll "$ADDR" "$FAKE" "$WORK/poll/sora-shim.db" "$JOBS" "$RATE" "$POLL_PID" \
  >>"$WORK/results.jsonl"
kill "$POLL_PID" 2>/dev/null || true

python3 "$ROOT/benches/report.py" write "$WORK/results.jsonl" "$RUNS" "$DURATION" >"$WORK/BENCHMARKS.md"
# The section benches/replicas.sh wrote (measured separately) stays, at the end.
sed -n '/^<!-- benches\/replicas.sh -->$/,$p' "$ROOT/BENCHMARKS.md" >>"$WORK/BENCHMARKS.md" 2>/dev/null || true
cp "$WORK/BENCHMARKS.md" "$ROOT/BENCHMARKS.md"
echo "== wrote BENCHMARKS.md"
