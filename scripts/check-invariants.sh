#!/usr/bin/env bash
# Checks the invariants ARCHITECTURE.md states, where a command can check them.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# 1. The policy crate is pure: no async runtime, no networking, no kernel access in its
#    dependency tree (normal dependencies only; dev-dependencies are tests).
deps=$(cargo tree -p cellwall-policy -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for bad in tokio async-std mio futures hyper tonic reqwest aya libc nix socket2 rustix; do
  if grep -qx "$bad" <<<"$deps"; then
    echo "invariant broken: cellwall-policy depends on $bad (it must stay free of I/O and async)" >&2
    fail=1
  fi
done

# 2. ... and performs no I/O itself: no filesystem, process, socket, clock or thread use.
if grep -rnE 'std::(fs|process|net::(Tcp|Udp)|thread)|SystemTime|Instant::now|std::io::std(in|out)|println!|eprintln!' \
     crates/policy/src; then
  echo "invariant broken: I/O, clocks or threads in crates/policy/src (see the lines above)" >&2
  fail=1
fi

# 3. No unsafe outside the datapath crate.
if grep -rn --include='*.rs' -E '^[^/]*\bunsafe[[:space:]]*(\{|fn\b|impl\b|extern\b)' crates | grep -v '^crates/datapath/'; then
  echo "invariant broken: unsafe outside crates/datapath (see the lines above)" >&2
  fail=1
fi

if ((fail)); then exit 1; fi
echo "invariants hold: policy crate pure ($(wc -l <<<"$deps") crates in its tree), unsafe confined"
