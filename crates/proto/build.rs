//! Generates the protobuf messages and the tonic client/server from `proto/cellwall.proto`.
//! protox compiles the .proto in Rust, so building needs no `protoc` install.
fn main() {
    let proto = "proto/cellwall.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile([proto], ["proto"]).unwrap_or_else(|e| panic!("{proto}: {e}"));
    tonic_build::configure()
        .build_transport(true)
        // The same snapshot goes to 1,000 agents: shared bytes, not 1,000 copies.
        .bytes([".cellwall.v1.DesiredState.state_json"])
        // Sorted labels: deterministic encoding and comparisons.
        .btree_map([".cellwall.v1.LocalWorkload.labels"])
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating code from {proto}: {e}"));
}
