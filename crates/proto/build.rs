//! Generates the tonic client and server of the agent service from the hand-written messages in
//! `src/lib.rs` (no `protoc` needed on the build machine; `proto/cellwall.proto` documents the
//! same contract for other implementations).
fn main() {
    use tonic_build::manual::{Builder, Method, Service};
    let m = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::{input}"))
            .output_type(format!("crate::{output}"))
            .codec_path("tonic::codec::ProstCodec")
    };
    let svc = Service::builder()
        .name("Agent")
        .package("cellwall.v1")
        .method(m("join", "Join", "JoinRequest", "JoinReply").build())
        .method(
            m("watch", "Watch", "WatchRequest", "DesiredState")
                .server_streaming()
                .build(),
        )
        .method(m("ack", "Ack", "AckRequest", "AckReply").build())
        .method(m("report_flows", "ReportFlows", "FlowBatch", "FlowAck").build())
        .build();
    Builder::new().compile(&[svc]);
    println!("cargo:rerun-if-changed=build.rs");
}
