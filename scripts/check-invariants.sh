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

# 3. No unsafe outside the datapath crate: the compiler refuses it (workspace lint
#    `unsafe_code = "forbid"`, which every crate but the datapath inherits); this checks that
#    each crate still inherits it, and greps as a second net.
for toml in crates/*/Cargo.toml; do
  case "$toml" in crates/datapath/*) continue ;; esac
  if ! grep -qx 'workspace = true' <(sed -n '/^\[lints\]/,/^\[/p' "$toml"); then
    echo "invariant broken: $toml does not inherit the workspace lints ([lints] workspace = true)" >&2
    fail=1
  fi
done
if grep -rn --include='*.rs' -E '^[^/]*\bunsafe[[:space:]]*(\{|fn\b|impl\b|extern\b)' crates | grep -v '^crates/datapath/'; then
  echo "invariant broken: unsafe outside crates/datapath (see the lines above)" >&2
  fail=1
fi

# 4. No import cycles between modules, no source file over 700 lines (scripts/check_modules.py).
python3 scripts/check_modules.py || fail=1

# 5. The CLI built without its lab feature links neither aya nor tonic (so it builds without
#    clang and stays small): the lab is the only way kernel and gRPC code enter it.
cli=$(cargo tree -p cellwall-cli --no-default-features -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
for bad in aya tonic cellwall-datapath cellwall-agent; do
  if grep -qx "$bad" <<<"$cli"; then
    echo "invariant broken: cellwall-cli without the lab feature depends on $bad" >&2
    fail=1
  fi
done

# 6. Libraries report errors with thiserror types; anyhow only in binaries' main.rs and the CLI.
for lib in policy manifests api datapath proto agent manager lab; do
  if grep -rlnE '(use anyhow|anyhow::)' "crates/$lib/src" --include='*.rs' | grep -v '/main\.rs$'; then
    echo "invariant broken: anyhow in the $lib library (see the files above): use a thiserror type" >&2
    fail=1
  fi
done

# 7. Every repository path the documentation names exists (scripts/check_docs.py).
python3 scripts/check_docs.py || fail=1

# 8. The web console builds no markup from strings (everything it shows comes from agents,
#    imports and users) and calls only documented routes of the public API.
if grep -rnE '\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(' ui/src; then
  echo "invariant broken: markup from strings or eval in ui/src (see the lines above): build elements with textContent" >&2
  fail=1
fi
# Routes appear as url("PATH", ...) (ui/src/api.ts builds /v1/PATH) or spelled out.
routes=$( ( (grep -rhoE 'url\("[a-z/]+"' ui/src || true) | sed -E 's|url\("|/v1/|; s|"$||'
            (grep -rhoE "[\"'\`]/v1/[a-z/]+" ui/src || true) | cut -c2-) | sort -u)
if [[ -z $routes ]]; then
  echo "invariant check broken: found no API route in ui/src (how does it call the API now?)" >&2
  fail=1
fi
for route in $routes; do
  if ! grep -q "\"$route\"" docs/openapi.json; then
    echo "invariant broken: the console calls $route, which docs/openapi.json does not document" >&2
    fail=1
  fi
done

if ((fail)); then exit 1; fi
echo "invariants hold: policy crate pure ($(wc -l <<<"$deps") crates in its tree), unsafe confined, no module cycles, CLI without the lab free of aya and tonic, anyhow only in binaries, doc paths resolve, the console builds no markup from strings and calls only documented routes"
