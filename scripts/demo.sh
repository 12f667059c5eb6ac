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

if [[ $(id -u) -ne 0 ]]; then
  echo
  echo "(skipping the lab part: it needs root for network namespaces and eBPF)"
  exit 0
fi
LAB=demo-$$
trap '"$CW" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT
echo
echo "==> The same shop as real workloads: network namespaces, real servers, eBPF enforcement"
"$CW" lab up -f examples/shop/ --name "$LAB"
echo
echo "==> Measured with real connections (. connected, X blocked or nothing listening)"
"$CW" lab probe --name "$LAB" --probe TCP/5432 --probe TCP/8080 --timeout 300
echo
echo "==> The debug pod tries the database directly (dropped silently by the kernel):"
rc=0
"$CW" lab exec --name "$LAB" tools/debug -- timeout 1 bash -c 'exec 3<>/dev/tcp/10.244.0.2/5432' 2>/dev/null || rc=$?
case $rc in
  0) echo "   connected (unexpected!)"; exit 1 ;;
  124) echo "   no answer within 1 s: the SYN was dropped (no RST, no ICMP)" ;;
  *) echo "   failed with code $rc (refused or unreachable, not a silent drop)"; exit 1 ;;
esac
echo
echo "==> What the datapath recorded, with the rule that decided each connection (drops):"
"$CW" lab flows --name "$LAB" | grep -E "^denied|events;" | sort | uniq -c | sort -rn | head -12
