//! Shared fixtures of the discover tests: a small inventory and history builders.

use super::{Endpoint, HistFlow, Observed};
use crate::load::parse_file;
use crate::model::{Inventory, Protocol, WorkloadKey};

pub fn inv_and_policies(yaml: &str) -> (Inventory, Vec<crate::model::Policy>) {
    crate::load::into_model(
        parse_file("t.yaml", yaml)
            .unwrap()
            .objects
            .into_iter()
            .map(|o| o.object),
    )
}

pub const INV: &str = "
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: web-1, labels: {app: web, pod-template-hash: x1}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: web-2, labels: {app: web, pod-template-hash: x1}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db, labels: {app: db}}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {namespace: b, name: debug, labels: {app: debug}}
status: {podIP: 10.0.0.4}
";

pub fn ep(inv: &Inventory, key: &str) -> Endpoint {
    let w = &inv.workloads[&WorkloadKey::parse(key).unwrap()];
    Endpoint::Workload {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        labels: crate::Labels::clone(&w.labels),
    }
}

pub fn flow(src: Endpoint, dst: Endpoint, port: u16, observed: Observed, n: u64) -> HistFlow {
    HistFlow {
        src,
        dst,
        protocol: Protocol::Tcp,
        port,
        observed,
        rule: None,
        connections: n,
        first_ns: 1_000_000_000,
        last_ns: 2_000_000_000,
    }
}
