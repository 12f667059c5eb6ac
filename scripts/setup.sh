#!/usr/bin/env bash
# Installs what building and testing Cellwall needs on a fresh Debian machine, then builds.
# Idempotent: installs only what is missing. Sourced by demo.sh and test.sh.
set -euo pipefail

# Debian packages the build and the test tiers need: clang and libbpf-dev build the eBPF
# datapath (bpf/), iproute2 builds the lab (network namespaces, veths), iptables, ipset and
# nftables are the connrate benchmark's comparisons, dnsmasq-base is the lab's DNS server (FQDN tests).
APT_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iptables ipset nftables dnsmasq-base)

need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if ((${#APT_PACKAGES[@]})); then
  need_apt "${APT_PACKAGES[@]}"
fi

# The web console (ui/, TypeScript) is built into the manager by crates/manager/build.rs with
# esbuild; its end-to-end tests drive Debian's Chromium with playwright-core (the npm packages
# are pinned by ui/package-lock.json; no browser is downloaded).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  need_apt nodejs npm
fi
if [[ ! -d ui/node_modules/esbuild ]] || [[ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]]; then
  echo "setup: installing the web console's npm packages (npm ci --prefix ui)" >&2
  npm ci --prefix ui --no-audit --no-fund --loglevel=error
fi
