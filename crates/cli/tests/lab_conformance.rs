//! Root tier: every conformance case on real traffic through `cellwall lab` (network namespaces,
//! real servers, the kernel datapath programmed by the agent's enforcement path). SCTP probes are
//! skipped when the kernel has no SCTP module (`sctp` not loadable: the lab says so and counts them).

use cellwall_testkit::conformance::{parse_matrices, run_all, Matrices, Runner, World};
use cellwall_testkit::lab::{unique_name, Guard};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

struct LabRunner {
    name: String,
    up: bool,
    /// Policy documents applied at the previous step, by (kind, namespace, name).
    applied: BTreeSet<(String, String, String)>,
    /// `lab up --source`: `files` or `kubernetes`.
    source: &'static str,
    /// `lab up --cni` of each case, in turn.
    layouts: &'static [&'static str],
    /// Cases started so far.
    cases: usize,
    /// Takes the lab down even when an assertion failed mid-case.
    _guard: Guard,
}

fn cw(args: &[&str]) -> Output {
    cellwall_testkit::bin!("cellwall").run(args)
}

impl Runner for LabRunner {
    fn start_case(&mut self, _world: &World, _tmp: &Path) {
        self.cases += 1;
        self.up = false;
        self.applied.clear();
    }

    fn step(&mut self, world: &World, probes: &[(String, u16)], tmp: &Path) -> Matrices {
        let file = tmp.join("lab.yaml");
        std::fs::write(&file, world.manifests()).unwrap();
        let f = file.to_str().unwrap();
        if !self.up {
            cw(&[
                "lab",
                "up",
                "-f",
                f,
                "--name",
                &self.name,
                "--source",
                self.source,
                "--cni",
                self.layouts[self.cases % self.layouts.len()],
            ]);
            self.up = true;
        } else {
            cw(&["lab", "apply", "-f", f, "--name", &self.name]);
            let now: BTreeSet<_> = world.policies.keys().cloned().collect();
            let gone: Vec<_> = self.applied.difference(&now).cloned().collect();
            if !gone.is_empty() {
                let mut docs = Vec::new();
                for (kind, ns, name) in gone {
                    let (api, meta) = match kind.as_str() {
                        "NetworkPolicy" => (
                            "networking.k8s.io/v1",
                            format!("{{name: {name}, namespace: {ns}}}"),
                        ),
                        "ClusterNetworkPolicy" => (
                            "policy.networking.k8s.io/v1alpha2",
                            format!("{{name: {name}}}"),
                        ),
                        _ => (
                            "policy.networking.k8s.io/v1alpha1",
                            format!("{{name: {name}}}"),
                        ),
                    };
                    // The smallest valid spec: `delete` needs only the kind and name.
                    let spec = match kind.as_str() {
                        "NetworkPolicy" => "{podSelector: {}}",
                        "AdminNetworkPolicy" => "{priority: 1, subject: {namespaces: {}}}",
                        "ClusterNetworkPolicy" => {
                            "{tier: Admin, priority: 1, subject: {namespaces: {}}}"
                        }
                        _ => "{subject: {namespaces: {}}}",
                    };
                    docs.push(format!(
                        "apiVersion: {api}\nkind: {kind}\nmetadata: {meta}\nspec: {spec}\n"
                    ));
                }
                let del = tmp.join("delete.yaml");
                std::fs::write(&del, docs.join("---\n")).unwrap();
                cw(&[
                    "lab",
                    "delete",
                    "-f",
                    del.to_str().unwrap(),
                    "--name",
                    &self.name,
                ]);
            }
        }
        self.applied = world.policies.keys().cloned().collect();
        let mut args = vec![
            "lab".to_string(),
            "probe".into(),
            "-o".into(),
            "json".into(),
            "--timeout".into(),
            "400".into(),
            "--name".into(),
            self.name.clone(),
        ];
        for (p, port) in probes {
            args.push("--probe".into());
            args.push(format!("{p}/{port}"));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        parse_matrices(&cw(&a).stdout)
    }

    fn end_case(&mut self) {
        if self.up {
            cw(&["lab", "down", "--name", &self.name]);
            self.up = false;
        }
    }

    fn supports(&self, proto: &str) -> bool {
        proto != "SCTP"
    }
}

fn run(source: &'static str, layouts: &'static [&'static str]) {
    let name = unique_name("conf");
    let mut guard = Guard::new(cellwall_testkit::bin!("cellwall"));
    guard.add(&name);
    let mut runner = LabRunner {
        name,
        up: false,
        applied: BTreeSet::new(),
        source,
        layouts,
        cases: 0,
        _guard: guard,
    };
    let Some((cases, cells, skipped, failures)) = run_all(&mut runner, &format!("lab-{source}"))
    else {
        return;
    };
    eprintln!(
        "conformance (lab, --source {source}, real traffic): {cases} cases, {cells} cells checked, {skipped} SCTP probes skipped (no SCTP in this kernel), {} mismatches",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn conformance_cases_on_real_traffic() {
    run("files", &["routed"]);
}

/// The same cases with the lab's objects in its Kubernetes API server: the manager learns
/// every step (label changes, policy updates and deletions) from its watch, and the agent finds
/// each pod's interface in the kernel as a DaemonSet agent does. The cases alternate between
/// the routed and the bridged node layout (both in full would add six minutes to CI).
#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn conformance_cases_through_the_kubernetes_source() {
    run("kubernetes", &["routed", "bridge"]);
}
