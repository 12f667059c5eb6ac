#!/usr/bin/env bash
# The main job: builds Cellwall, shows static analysis of examples/shop, then (as root) the
# guided tour on real traffic: `cellwall demo` (lab + manager + agent + eBPF).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "==> building (release)" >&2
cargo build --release -q --workspace
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

if [[ $(id -u) -ne 0 ]]; then
  echo
  echo "(skipping the lab part: it needs root for network namespaces and eBPF)"
  exit 0
fi
echo
echo "==> cellwall demo: a shop on real workloads, watched, locked down, attacked"
"$CW" demo
