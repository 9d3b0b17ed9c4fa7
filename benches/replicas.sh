#!/usr/bin/env bash
# Replicas on PostgreSQL against one process on SQLite, loopback only; writes its section of BENCHMARKS.md (the
# last one, from the line `<!-- benches/replicas.sh -->`; benches/run.sh keeps it) and prints it:
#
#   bash benches/replicas.sh            # RUNS=3 DURATION=10 by default; medians over RUNS
#
# 1. Reads by id (64 connections) and creates (16 connections) on: SQLite, one process; PostgreSQL, one
#    replica; PostgreSQL, three replicas (the connections split three ways, one wrk per replica, rates summed:
#    no load balancer in the way). Same config otherwise; local assets on one shared directory.
# 2. Statements (= round trips) each create and each read sends to PostgreSQL, from pg_stat_statements.
# 3. Takeover after a kill -9: the time from killing the replica that drives 20 unfinished jobs until the last
#    of them is leased to a survivor, at lease_secs = 3 and at the default 30.
#
# Needs wrk and PostgreSQL's server (Debian packages wrk, postgresql; installed if missing and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/sora-shim-replicas.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${PGBIN:-}" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! command -v wrk >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "missing wrk or postgresql (install them)"; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk postgresql >/dev/null
fi
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user Debian's package made.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

echo "== building (release)" >&2
cargo build --release --locked --bin sora-shim 2>&1 | tail -1 >&2
SHIM_BIN=$ROOT/target/release/sora-shim

echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') in $WORK/pg" >&2
mkdir -p "$WORK/pg" && [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust >/dev/null
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Stock settings (fsync and synchronous_commit on, as in production) plus the statement counter.
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 \
  -c shared_preload_libraries=pg_stat_statements -c max_connections=200" start >/dev/null
psql_() { psql -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -At "$@"; }
# A fresh database per scenario (called in $(…), so the name cannot come from a shell counter).
new_db() { local name="b$(date +%s%N)"; psql_ -d postgres -c "CREATE DATABASE $name" >/dev/null || exit 1; echo "$name"; }

# Starts a shim: start NAME DATA_DIR CONFIG [ENV=VALUE…]; waits for "listening on http://ADDR"; sets ADDR, LAST_PID.
start() {
  local name=$1 data=$2 config=$3
  shift 3
  env "$@" "$SHIM_BIN" serve --config "$config" --listen 127.0.0.1:0 --data-dir "$data" >"$WORK/$name.out" \
    2>>"$WORK/servers.log" &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 1 600); do
    ADDR=$(sed -n 's|^listening on http://||p' "$WORK/$name.out" | head -n1)
    [ -n "$ADDR" ] && return 0
    sleep 0.1
  done
  echo "sora-shim $name did not start"; tail -20 "$WORK/servers.log"; exit 1
}

# The model sora-2-pro goes to a backend that never answers: creates are measured up to admission, and with
# retries 10 minutes apart the worker stays out of the way after one attempt per job.
common_config() {
  cat <<EOF
[server]
poll_after_ms = 2000
[worker]
retry_base_ms = 600000
retry_max_ms = 600000
[backends.local]
kind = "local"
fps = 4
concurrent_renders = 1
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
}
common_config >"$WORK/sqlite.toml"
pg_config() { # LEASE_SECS
  common_config
  printf '[store]\nkind = "postgres"\nlease_secs = %s\n[assets]\nkind = "local"\ndir = "%s"\nshared = true\n' \
    "$1" "$WORK/assets"
}
pg_config 30 >"$WORK/pg.toml"
pg_config 3 >"$WORK/pg-lease3.toml"

create() { # ADDR MODEL
  curl -sf "http://$1/v1/videos" -H 'authorization: Bearer bench' -H 'content-type: application/json' \
    -d "{\"prompt\":\"bench\",\"model\":\"$2\",\"seconds\":\"4\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# wrk against each address at once, CONNS split among them; one JSON line per run (rates summed, the worst
# p50/p99 of the parts) into $WORK/results.jsonl.
measure() { # NAME CONNS SCRIPT PATH ADDR…
  local name=$1 conns=$2 script=$3 path=$4
  shift 4
  local n=$# per=$((conns / $#))
  for run in $(seq 1 "$RUNS"); do
    local i=0 loads=()
    for addr in "$@"; do
      i=$((i + 1))
      wrk -t1 -c"$per" -d"${DURATION}s" --timeout 60s --latency -s "$script" "http://$addr$path" >"$WORK/wrk.$i" 2>&1 &
      loads+=($!)
    done
    for p in "${loads[@]}"; do wait "$p" || true; done
    for j in $(seq 1 "$n"); do python3 benches/report.py parse "$name" "$per" "$run" <"$WORK/wrk.$j"; done |
      python3 -c '
import json, sys
parts = [json.loads(l) for l in sys.stdin]
print(json.dumps({"name": parts[0]["name"], "conns": sum(p["conns"] for p in parts), "run": parts[0]["run"],
  "rps": sum(p["rps"] or 0 for p in parts), "p50_ms": max(p["p50_ms"] or 0 for p in parts),
  "p99_ms": max(p["p99_ms"] or 0 for p in parts), "non_2xx": sum(p["non_2xx"] for p in parts)}))' \
      >>"$WORK/results.jsonl"
  done
}

: >"$WORK/results.jsonl"
run_shape() { # LABEL ADDR…
  local label=$1
  shift
  : >"$WORK/ids.txt"
  for _ in $(seq 1 100); do create "$1" sora-2-pro >>"$WORK/ids.txt"; done
  IDS_FILE=$WORK/ids.txt measure "$label: GET /v1/videos/{id}" 64 benches/get.lua "" "$@"
  measure "$label: POST /v1/videos JSON" 16 benches/create_json.lua /v1/videos "$@"
}

echo "== SQLite, one process" >&2
start sqlite "$WORK/sqlite-data" "$WORK/sqlite.toml"
run_shape "SQLite, 1 process" "$ADDR"
kill "$LAST_PID"; wait "$LAST_PID" 2>/dev/null || true

echo "== PostgreSQL, one replica" >&2
DB=$(new_db)
URL="postgres://postgres@127.0.0.1:$PGPORT/$DB?sslmode=disable"
start pg1 "$WORK/pg1-data" "$WORK/pg.toml" SORA_SHIM_DATABASE_URL="$URL"
ONE=$ADDR ONE_PID=$LAST_PID
run_shape "PostgreSQL, 1 replica" "$ONE"

echo "== statements per create and per read (pg_stat_statements)" >&2
psql_ -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
sleep 2
statements() { # LABEL COUNT
  psql_ -d "$DB" -F $'\t' -c "SELECT calls, regexp_replace(left(query, 110), '\s+', ' ', 'g') FROM pg_stat_statements \
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$DB') AND query NOT ILIKE '%pg_stat_statements%' \
    ORDER BY calls DESC" | awk -F'\t' -v n="$2" -v label="$1" '{printf "| %s | %.2f | `%s` |\n", label, $1 / n, $2}'
}
psql_ -d "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
for _ in $(seq 1 200); do create "$ONE" sora-2-pro >/dev/null; done
sleep 1
statements "create (and the worker's first attempt)" 200 >"$WORK/stmts.md"
psql_ -d "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
ID=$(head -n1 "$WORK/ids.txt")
for _ in $(seq 1 500); do curl -sf "http://$ONE/v1/videos/$ID" -H 'authorization: Bearer bench' >/dev/null; done
statements "GET by id" 500 >>"$WORK/stmts.md"
kill "$ONE_PID"; wait "$ONE_PID" 2>/dev/null || true

echo "== PostgreSQL, three replicas" >&2
DB=$(new_db)
URL="postgres://postgres@127.0.0.1:$PGPORT/$DB?sslmode=disable"
THREE=()
for i in 1 2 3; do
  start "pg3-$i" "$WORK/pg3-$i-data" "$WORK/pg.toml" SORA_SHIM_DATABASE_URL="$URL"
  THREE+=("$ADDR")
done
run_shape "PostgreSQL, 3 replicas" "${THREE[@]}"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

echo "== takeover after kill -9" >&2
: >"$WORK/takeover.md"
for lease in 3 30; do
  config=$WORK/pg.toml
  [ "$lease" = 3 ] && config=$WORK/pg-lease3.toml
  DB=$(new_db)
  URL="postgres://postgres@127.0.0.1:$PGPORT/$DB?sslmode=disable"
  ADDRS=() KPIDS=()
  for i in 1 2 3; do
    start "kill$lease-$i" "$WORK/kill$lease-$i-data" "$config" SORA_SHIM_DATABASE_URL="$URL"
    ADDRS+=("$ADDR") KPIDS+=("$LAST_PID")
  done
  # Twenty jobs that never finish on their own (the unreachable backend), created on the first replica,
  # whose worker leases them at once.
  for _ in $(seq 1 20); do create "${ADDRS[0]}" sora-2-pro >/dev/null; done
  sleep 2
  owner=$(psql_ -d "$DB" -c "SELECT lease_owner FROM jobs WHERE lease_owner IS NOT NULL GROUP BY lease_owner \
    ORDER BY count(*) DESC LIMIT 1")
  held=$(psql_ -d "$DB" -c "SELECT count(*) FROM jobs WHERE lease_owner = '$owner'")
  kill -9 "${KPIDS[0]}"
  t0=$(date +%s%N)
  while [ "$(psql_ -d "$DB" -c "SELECT count(*) FROM jobs WHERE lease_owner = '$owner'")" != 0 ]; do
    sleep 0.05
  done
  t1=$(date +%s%N)
  printf '| %s | %s | %d.%d s |\n' "$lease" "$held" $(((t1 - t0) / 1000000000)) $(((t1 - t0) / 100000000 % 10)) \
    >>"$WORK/takeover.md"
  for p in "${KPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
done

echo "== report" >&2
{
echo "<!-- benches/replicas.sh -->"
echo "## Replicas on PostgreSQL"
echo
echo "Measured $(date -u +%F) on $(python3 -c 'import sys; sys.path.insert(0, "benches"); import report; print(report.machine())'),"
echo "commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- src || echo ' plus uncommitted changes'), PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') (stock settings, fsync on, same machine),"
echo "with \`bash benches/replicas.sh\` (wrk, 10 s per run, median of $RUNS runs). Everything — PostgreSQL, every replica and"
echo "wrk — shares the same cores, so three replicas here show what sharing costs, not what it gains: on separate"
echo "machines each replica brings its own cores. Creates go to a backend that never answers (admission alone); with"
echo "three replicas one wrk per replica takes a third of the connections and the rates are summed."
echo
echo "| scenario | connections | requests/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
python3 - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["name"], []).append(r)
for name, runs in rows.items():
    med = lambda k: statistics.median(r[k] for r in runs)
    print(f"| {name} | {runs[0]['conns']} | {med('rps'):,.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | "
          f"{max(r['non_2xx'] for r in runs)} |")
PY
echo
echo "**Statements per request** (pg_stat_statements over 200 creates, then over 500 reads of one video, one"
echo "replica; each statement is one round trip; a create's row includes what the worker sent for that job meanwhile:"
echo "its one attempt at the unreachable backend, and the sweeps' lease renewals):"
echo
echo "| path | per request | statement |"
echo "|---|---:|---|"
cat "$WORK/stmts.md"
echo
echo "**kill -9** of the replica that drives 20 unfinished jobs (three replicas): the time until the last of them is"
echo "leased to a survivor (polled every 50 ms in the database):"
echo
echo "| lease_secs | jobs it held | time |"
echo "|---:|---:|---:|"
cat "$WORK/takeover.md"
} >"$WORK/section.md"
sed -i '/^<!-- benches\/replicas.sh -->$/,$d' BENCHMARKS.md
cat "$WORK/section.md" >>BENCHMARKS.md
cat "$WORK/section.md"
