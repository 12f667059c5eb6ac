#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of everything Cellwall reads from outside:
# manifests, label imports, gRPC messages, REST bodies and queries, and the manager's REST router
# in-process (fuzz/fuzz_targets/*.rs say what each covers and asserts).
#
# Each target runs FUZZ_SECONDS (default 60) starting from its committed seed corpus
# (fuzz/corpus/TARGET, which this script never changes: what a run finds goes to a scratch
# directory). Any panic, failed assertion, hang (FUZZ_TIMEOUT seconds for one input, default 10)
# or memory blow-up (2 GiB) fails the script, which prints the input that did it (libFuzzer keeps
# it in fuzz/artifacts/TARGET/ and prints it in base64) and how to reproduce it.
#
#   scripts/fuzz.sh                      every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh     longer
#   scripts/fuzz.sh proto rest           only these targets
#   FUZZ_CLIPPY=1 scripts/fuzz.sh        also clippy the fuzz crate (-D warnings; a separate build)
#
# Stable toolchain: cargo-fuzz builds with AddressSanitizer by default, which needs nightly
# (`-Zsanitizer=address`), and no nightly can be had on these machines. `--sanitizer none`
# drops only that: the coverage instrumentation libFuzzer needs (`-Cpasses=sancov-module` and
# `-Cllvm-args=-sanitizer-coverage-*`) is stable, so no RUSTC_BOOTSTRAP is needed. What ASan
# would add is little here: the targets reach only safe Rust (`unsafe` is forbidden outside
# crates/datapath, which no target links), where out-of-bounds accesses already panic. Built with
# `--debug-assertions` (debug assertions and overflow checks on), so an arithmetic overflow is a
# crash too, not a silent wrap.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${FUZZ_SECONDS:-60}
TIMEOUT=${FUZZ_TIMEOUT:-10}
ALL=(manifest import proto api rest)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

if ! cargo fuzz --version 2>/dev/null | grep -q " ${CARGO_FUZZ_VERSION}$"; then
  echo "fuzz: installing cargo-fuzz ${CARGO_FUZZ_VERSION} from crates.io (~1 min)" >&2
  cargo install -q --locked "cargo-fuzz@${CARGO_FUZZ_VERSION}"
fi

export CARGO_INCREMENTAL=0
FLAGS=(--sanitizer none --debug-assertions)

# The fuzz crate builds Cellwall's crates with the versions the workspace locks: its lock file
# is the root's, to which cargo adds only what fuzzing needs (libFuzzer's crate, pinned in
# fuzz/Cargo.toml). Not committed, so it never drifts from the root's.
cp Cargo.lock fuzz/Cargo.lock

cargo fmt --manifest-path fuzz/Cargo.toml -- --check
if [[ ${FUZZ_CLIPPY:-0} == 1 ]]; then
  cargo clippy -q --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
fi

start=$(date +%s)
echo "fuzz: building the targets (optimized, instrumented; ~8 min from nothing on 2 cores)" >&2
cargo fuzz build "${FLAGS[@]}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The rest target's manager keeps its store and CA here (removed at the end).
export CELLWALL_FUZZ_DIR="$WORK/manager"
mkdir -p "$CELLWALL_FUZZ_DIR"

stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/corpus/$t"
  log="$WORK/$t.log"
  seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "==> fuzz $t: ${SECONDS_EACH} s from ${seeds} seeds"
  touch "$WORK/stamp"
  if cargo fuzz run "${FLAGS[@]}" "$t" "$WORK/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    found=$(find "$WORK/corpus/$t" -type f | wc -l)
    echo "    ok: $(stat number_of_executed_units "$log") executions, $(stat average_exec_per_sec "$log")/s, coverage $(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2) edges, ${found} new inputs"
  else
    failed+=("$t")
    echo "    FAILED: $t" >&2
    # The panic or libFuzzer's report, and the input (artifact path, base64, how to reproduce).
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)|^\s+[0-9]+: |^\s+at ' "$log" | tail -60 >&2
    find "fuzz/artifacts/$t" -type f -newer "$WORK/stamp" 2>/dev/null | sed 's|^|    crash input: |' >&2
  fi
done
echo "fuzz: ${#TARGETS[@]} targets in $(($(date +%s) - start)) s"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs above; reproduce with: cargo fuzz run ${FLAGS[*]} TARGET INPUT)" >&2
  exit 1
fi
