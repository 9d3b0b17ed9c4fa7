#!/usr/bin/env bash
# schemathesis against the real binary, from the OpenAPI description the shim serves (GET /openapi.json, built
# from schemas/sora/): property-based requests to every operation, checking that nothing answers 5xx, that every
# answer matches its schema, status codes and content types, and that unauthenticated requests are refused.
# Excluded: positive_data_acceptance (the schemas leave model/size/seconds open strings; the config narrows them,
# and those refusals are the point). Usage: tests/schemathesis/run.sh SHIM_BIN SCHEMATHESIS_BIN [SECONDS]
set -euo pipefail
BIN=$1
ST=$2
SECS=${3:-60}
DIR=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
CONFIG=$(cd "$(dirname "$0")" && pwd)/sora-shim.toml
SCHEMATHESIS_PROVIDER_KEY=unused "$BIN" serve --config "$CONFIG" --data-dir "$DIR/data" \
    --listen 127.0.0.1:0 > "$DIR/stdout" 2> "$DIR/stderr" &
PID=$!
for _ in $(seq 1 100); do
    ADDR=$(sed -n 's|^listening on http://||p' "$DIR/stdout" | head -n1)
    [ -n "$ADDR" ] && break
    sleep 0.1
done
if [ -z "${ADDR:-}" ]; then
    echo "the shim did not start:"; cat "$DIR/stderr"; exit 1
fi
# schemathesis keeps a cache of examples in its working directory: keep it out of the repository.
cd "$DIR"
"$ST" run "http://$ADDR/openapi.json" -H "Authorization: Bearer sk-schemathesis" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-time "$SECS" --workers 1 --seed 20261123
