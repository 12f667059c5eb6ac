# Cellwall's image: the manager, the node agent and the CLI in one minimal image (the deploy/
# manifests choose the binary with `command`). Build: `docker build -t cellwall .`
#
# Stage 1 builds with the toolchain the repository is tested with: Rust 1.95 (DESIGN.md), clang
# for the BPF programs (crates/datapath/build.rs), Node.js for the console's bundle
# (crates/manager/build.rs runs esbuild from ui/node_modules).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN npm ci --prefix ui --no-audit --no-fund --loglevel=error \
 && cargo build --release --locked --bin cellwall-manager --bin cellwall-agent --bin cellwall

# Stage 2: Debian slim (glibc, a shell and coreutils for the uninstall DaemonSet), the three
# binaries, nothing else. The agent needs no iproute2: it reads the kernel's tables over
# netlink.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/cellwall-manager /src/target/release/cellwall-agent /src/target/release/cellwall /usr/local/bin/
USER 65532:65532
ENTRYPOINT []
CMD ["cellwall", "--help"]
