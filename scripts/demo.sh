#!/usr/bin/env bash
# The main job: builds Cellwall and runs it on the example shop in examples/shop.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> building (release)" >&2
cargo build --release -q -p cellwall-cli
CW=target/release/cellwall

echo
echo "==> Who can reach whom in examples/shop (policies: AdminNetworkPolicy, NetworkPolicy, Cellwall)"
"$CW" analyze -f examples/shop/
echo
echo "==> Why can't the debug pod in 'tools' reach the database?"
"$CW" analyze -f examples/shop/ --from tools/debug --to data/db --probe TCP/5432 --explain
echo
echo "==> Why may the API reach the database?"
"$CW" analyze -f examples/shop/ --from shop/api --to data/db --probe TCP/5432 --explain
