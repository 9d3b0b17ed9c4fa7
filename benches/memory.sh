#!/usr/bin/env bash
# The memory row of BENCHMARKS.md on its own: JOBS unfinished jobs (10,000 by default) created at once and polled
# to the end through a rate-limited fake (RATE API calls per second), the shim's peak RSS read at the end. The
# same scenario as the "10k unfinished jobs" section of benches/run.sh, for one binary and one environment at a
# time, so that allocator settings can be compared:
#
#   bash benches/memory.sh target/release/sora-shim
#   MALLOC_ARENA_MAX=2 bash benches/memory.sh target/release/sora-shim
#
# Prints one JSON line (see `poll` in benches/report.py). Loopback only; needs python3 and ffmpeg (the fake
# renders real MP4s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$(realpath "$1")
RATE=${POLL_RATE:-200}
JOBS=${POLL_JOBS:-10000}
WORK=$(mktemp -d /tmp/sora-shim-memory.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
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

# The fake is started without the allocator settings under test: only the shim gets them.
env -u MALLOC_ARENA_MAX python3 "$ROOT/tests/fakes/openai_videos.py" --port 0 --key test-key >"$WORK/fake.out" \
  2>>"$WORK/servers.log" &
PIDS+=($!)
for _ in $(seq 1 600); do
  FAKE=$(sed -n 's|^listening on http://||p' "$WORK/fake.out" | head -n1)
  [ -n "$FAKE" ] && break
  sleep 0.1
done
curl -sf -XPOST "http://$FAKE/__control/faults" -d "{\"rate_limit_rps\": $RATE, \"steps\": 2}" >/dev/null
# The openai mapping with one small size and length added, so that 10k finished videos stay cheap to store.
sed -e 's/^sizes = {/sizes = { "160x96" = "160x96", /' -e 's/^seconds = {/seconds = { "1" = "1", /' \
  "$ROOT/mappings/openai.toml" >"$WORK/openai-small.toml"
printf '%s\n' '[server]' 'poll_after_ms = 2000' '[worker]' 'poll_interval_ms = 1000' '[backends.fake]' \
  'kind = "mapping"' "mapping = \"$WORK/openai-small.toml\"" "base_url = \"http://$FAKE\"" \
  'secrets = { api_key = "BENCH_FAKE_KEY" }' \
  "requests_per_second = $RATE" '[api]' 'default_model = "sora-2"' 'default_size = "160x96"' 'default_seconds = "1"' \
  '[models."sora-2"]' 'backend = "fake"' 'sizes = ["160x96"]' 'seconds = ["1"]' >"$WORK/poll.toml"
export BENCH_FAKE_KEY=test-key
start shim "$BIN" serve --config "$WORK/poll.toml" --listen 127.0.0.1:0 --data-dir "$WORK/poll"
python3 "$ROOT/benches/report.py" poll "$ADDR" "$FAKE" "$WORK/poll/sora-shim.db" "$JOBS" "$RATE" "$LAST_PID"
