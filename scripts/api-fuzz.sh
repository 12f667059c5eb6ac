#!/usr/bin/env bash
# Fuzzes the manager's REST API from its own OpenAPI document (schemathesis) with every check
# (scripts/schemathesis.toml): no request, however malformed, gets a 5xx; every answer matches
# its schema; invalid requests are refused and valid ones accepted. Starts a throwaway manager on
# free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
if ! python3 -m pip show schemathesis 2>/dev/null | grep -q "^Version: ${SCHEMATHESIS_VERSION}$"; then
  echo "api-fuzz: installing schemathesis ${SCHEMATHESIS_VERSION} from PyPI" >&2
  python3 -m pip install -q --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
BIN=${CELLWALL_BIN_DIR:-target/debug}
DIR=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=$(port); GRPC=$(port)
"$BIN/cellwall-manager" --data-dir "$DIR" --api-listen "127.0.0.1:$API" --grpc-listen "127.0.0.1:$GRPC" >"$DIR/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do [[ -f "$DIR/endpoints.json" ]] && break; sleep 0.1; done
TOKEN=$(cat "$DIR/admin.token")
python3 -m schemathesis.cli --config-file scripts/schemathesis.toml run \
  "http://127.0.0.1:$API/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" --max-examples 30 --seed 7 --no-color
