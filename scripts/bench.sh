#!/usr/bin/env bash
# Runs every benchmark, each side by side in one run where it compares, with its goals checked
# (a goal missed by more than its noise band fails the run). Numbers and what they mean:
# docs/benchmarks.md. Root (BPF, network namespaces); about 20 minutes on 2 cores.
#   scripts/bench.sh            # everything, full size
#   scripts/bench.sh --quick    # smaller runs of the slow ones (7 minutes here)
# Run it on an otherwise idle machine: the comparisons survive noise, absolute numbers don't.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/bench.sh needs root (BPF programs and network namespaces)" >&2
  exit 1
fi
scripts/setup.sh
# Noise band: a goal fails only past goal x this factor (1 = the goal itself).
export CELLWALL_BENCH_NOISE_FACTOR=${CELLWALL_BENCH_NOISE_FACTOR:-1.5}
step() { printf '\n=== %s\n' "$*"; }
failed=()
run() {
  local name=$1
  shift
  step "$name: $*"
  if ! "$@"; then failed+=("$name"); fi
}

cargo build --release -q --workspace
q() { ((quick)) && echo "$@" || true; }

run "engine 10k x 1k" cargo bench -q -p cellwall-policy --bench engine -- $(q --quick)
run "engine 100k x 10k" cargo bench -q -p cellwall-policy --bench engine -- --scale 100k $(q --quick)
run "simulate 1M flows" cargo bench -q -p cellwall-policy --bench simulate
run "adversarial rule shapes" cargo bench -q -p cellwall-policy --bench shapes -- $(q --quick)
run "agent memory 100k x 10k (reported)" cargo bench -q -p cellwall-agent --bench memory
run "history in SQLite" cargo bench -q -p cellwall-manager --bench history
run "per-packet cost" cargo test --release -q -p cellwall-datapath -- --ignored --nocapture per_packet
run "propagation 1,000 agents x 100,000 workloads" \
  cargo bench -q -p cellwall-manager --bench propagation -- $(q --changes 20)
run "flow intake" cargo bench -q -p cellwall-manager --bench intake -- $(q --seconds 8)
run "apply to kernel latency" cargo bench -q -p cellwall-cli --bench apply_latency -- --changes 200
run "DNS answer latency (FQDN)" cargo bench -q -p cellwall-cli --bench dns_latency
run "datapath vs netfilter" cargo bench -q -p cellwall-cli --bench connrate -- $(q --rounds 40)
if [[ -f crates/cli/benches/agent_footprint.rs ]]; then
  run "agent footprint" cargo bench -q -p cellwall-cli --bench agent_footprint
fi

if ((${#failed[@]})); then
  printf '\nFAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
printf '\nno benchmark failed; each goal is printed above as OK or MISSED (a miss inside its noise band does not fail)\n'
