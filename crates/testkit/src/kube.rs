//! The Kubernetes path under test: a fake API server ([`cellwall_kube::fake::FakeApi`]) holding
//! a world's objects, and a conformance [`Runner`] that reads them back with
//! `cellwall analyze --kubeconfig`, so every conformance case also runs through kube-rs and the
//! list protocol.

use crate::bin::Bin;
use crate::conformance::{parse_matrices, Matrices, Runner, World};
pub use cellwall_kube::fake::{FakeApi, TOKEN};
use std::path::{Path, PathBuf};

/// The documents of a multi-document YAML text as JSON values (nulls dropped).
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("valid YAML");
            serde_json::to_value(v).expect("YAML values are JSON values")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Loads every object of `text` (multi-document YAML) into `api`; returns how many.
pub fn load_yaml(api: &FakeApi, text: &str) -> usize {
    let docs = yaml_documents(text);
    for d in &docs {
        api.apply(d)
            .unwrap_or_else(|e| panic!("fake API refused {d}: {e}"));
    }
    docs.len()
}

/// Writes a kubeconfig for `api` (context `fake`) under `dir`.
pub fn write_kubeconfig(api: &FakeApi, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, api.kubeconfig("fake")).expect("write kubeconfig");
    path
}

/// Computes each step's tables with `cellwall analyze --kubeconfig` against a fake API server
/// that holds exactly the step's objects (synced as a controller would: changed objects
/// applied, removed ones deleted).
pub struct KubeAnalyzeRunner {
    bin: Bin,
    api: FakeApi,
}

impl KubeAnalyzeRunner {
    pub fn new(bin: Bin) -> Self {
        KubeAnalyzeRunner {
            bin,
            api: FakeApi::start().expect("start the fake API server"),
        }
    }

    pub fn api(&self) -> &FakeApi {
        &self.api
    }
}

impl Runner for KubeAnalyzeRunner {
    fn step(&mut self, world: &World, probes: &[(String, u16)], tmp: &Path) -> Matrices {
        let text = world.manifests();
        self.api
            .sync(&yaml_documents(&text))
            .unwrap_or_else(|e| panic!("fake API refused the world: {e}\n{text}"));
        let kubeconfig = write_kubeconfig(&self.api, tmp);
        let mut cmd = self.bin.command();
        cmd.arg("analyze")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("-o")
            .arg("json");
        for (p, port) in probes {
            cmd.arg("--probe").arg(format!("{p}/{port}"));
        }
        let out = cmd.output().expect("run cellwall");
        assert!(
            out.status.success(),
            "analyze --kubeconfig failed: {}\nobjects:\n{text}",
            String::from_utf8_lossy(&out.stderr),
        );
        parse_matrices(&out.stdout)
    }
}
