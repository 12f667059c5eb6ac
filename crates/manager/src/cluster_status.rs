//! Status back to the cluster: each Cellwall Policy and ClusterPolicy the manager reads from a
//! cluster gets a `status` (its CRD's status subresource, `cellwall_kube::crd`) that says which
//! generation the manager read, the store revision holding it, on how many joined nodes that
//! revision (or a later one) is in force, and why not where it is not: refused by the loader
//! (the same message as the Warning Event), or nodes still applying or failing.
//!
//! Written only when it changed (a relist or a status-only MODIFIED event writes nothing), and
//! computed only when an input changed: the tracked objects, the published revision, or a
//! node's ack. A status write bumps the object's resourceVersion but not its generation, so
//! the watch that sees it stores nothing new and no loop forms.

use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::Kind;
use cellwall_kube::crd::has_status;
use cellwall_kube::watch::{Change, ObjectRef};
use cellwall_kube::Resource;
use cellwall_policy::load::Object;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// What the loader made of one watched policy.
#[derive(Debug, Clone)]
enum Outcome {
    /// Stored under this key; its store revision once looked up.
    Stored {
        key: String,
        revision: Option<u64>,
    },
    Refused(String),
}

#[derive(Debug, Clone)]
struct Tracked {
    resource: &'static Resource,
    object: ObjectRef,
    outcome: Outcome,
}

/// A joined node as far as a status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAck {
    pub name: String,
    pub applied: u64,
    pub last_error: String,
}

type ObjKey = (&'static str, Option<String>, String);

/// Each condition's last (status, lastTransitionTime), by condition type.
type Transitions = HashMap<String, (String, String)>;

/// A status to write, and, when nodes just started failing to apply this generation, the
/// message of the Warning Event that says so (once per generation and episode).
pub struct Due {
    pub resource: &'static Resource,
    pub object: ObjectRef,
    pub status: Value,
    pub cannot_enforce: Option<String>,
}

/// The statuses of one cluster's policies: what is tracked, and what was last written.
#[derive(Default)]
pub struct StatusWriter {
    tracked: BTreeMap<ObjKey, Tracked>,
    /// Last written status per object, and when each condition last changed.
    written: HashMap<ObjKey, (Value, Transitions)>,
    /// The inputs of the last computation (nodes' acks); none: compute.
    last_nodes: Option<Vec<NodeAck>>,
    dirty: bool,
    /// A named cluster (one of several): its policies select only its pods, so only its
    /// nodes (`CLUSTER:NODE`) count.
    cluster: Option<String>,
}

impl StatusWriter {
    /// The writer of one cluster's statuses (`cluster`: its name when it has one).
    pub fn new(cluster: Option<String>) -> Self {
        StatusWriter {
            cluster,
            ..Default::default()
        }
    }

    /// Follows a batch of watch changes (before the manager stores them).
    pub fn observe(&mut self, changes: &[Change]) {
        for c in changes {
            let (resource, reads, listed, deleted) = match c {
                Change::Listed { resource, objects } => {
                    (*resource, objects.iter().collect::<Vec<_>>(), true, false)
                }
                Change::Applied { resource, object } => (*resource, vec![object], false, false),
                Change::Deleted { resource, object } => (*resource, vec![object], false, true),
                Change::Failed { .. } => continue,
            };
            if !has_status(resource) {
                continue;
            }
            self.dirty = true;
            if listed {
                self.tracked.retain(|k, _| k.0 != resource.plural);
            }
            for r in reads {
                let k: ObjKey = (
                    resource.plural,
                    r.object.namespace.clone(),
                    r.object.name.clone(),
                );
                if deleted {
                    self.tracked.remove(&k);
                    self.written.remove(&k);
                    continue;
                }
                let outcome = match &r.result {
                    Ok(objects) => match objects.first().map(|o| &o.object) {
                        Some(Object::Policy(p)) => Outcome::Stored {
                            key: p.id.to_string(),
                            revision: None,
                        },
                        _ => Outcome::Refused("not a policy".into()),
                    },
                    Err(e) => Outcome::Refused(e.to_string()),
                };
                self.tracked.insert(
                    k,
                    Tracked {
                        resource,
                        object: r.object.clone(),
                        outcome,
                    },
                );
            }
        }
        let live: std::collections::HashSet<&ObjKey> = self.tracked.keys().collect();
        self.written.retain(|k, _| live.contains(k));
    }

    /// The statuses that changed since they were last written, given the nodes' acks now and
    /// the store revisions of the tracked policies (looked up through `m` for those unknown).
    pub fn due(&mut self, m: &Manager, now: &str) -> Result<Vec<Due>, ManagerError> {
        let mut nodes = m.node_acks()?;
        if let Some(c) = &self.cluster {
            nodes.retain(|n| cellwall_policy::clusters::cluster_of(&n.name) == Some(c.as_str()));
        }
        if !self.dirty && self.last_nodes.as_ref() == Some(&nodes) {
            return Ok(Vec::new());
        }
        for t in self.tracked.values_mut() {
            if let Outcome::Stored { key, revision } = &mut t.outcome {
                if revision.is_none() {
                    *revision = m.store.current_one(Kind::Policy, key)?.map(|c| c.revision);
                }
            }
        }
        let mut out = Vec::new();
        for (k, t) in &self.tracked {
            let (prev, times) = self.written.get(k).cloned().unwrap_or_default();
            let (status, times) = status_of(t, &nodes, now, &times);
            if without_times(&status) != without_times(&prev) {
                let failing = |s: &Value| {
                    s["conditions"][1]["reason"] == "NodesFailing"
                        && s["observedGeneration"] == status["observedGeneration"]
                };
                let warn = (failing(&status) && !failing(&prev)).then(|| {
                    status["conditions"][1]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                self.written.insert(k.clone(), (status.clone(), times));
                out.push(Due {
                    resource: t.resource,
                    object: t.object.clone(),
                    status,
                    cannot_enforce: warn,
                });
            }
        }
        self.last_nodes = Some(nodes);
        self.dirty = false;
        Ok(out)
    }

    /// Forgets what was written for an object (a write failed: try again next time).
    pub fn failed(&mut self, resource: &Resource, object: &ObjectRef) {
        self.written.remove(&(
            resource.plural,
            object.namespace.clone(),
            object.name.clone(),
        ));
        self.dirty = true;
    }
}

impl Manager {
    /// Every node holding a certificate, with the revision it last applied.
    pub(crate) fn node_acks(&self) -> Result<Vec<NodeAck>, ManagerError> {
        Ok(self
            .store
            .nodes_applied()?
            .into_iter()
            .map(|n| NodeAck {
                name: n.name,
                applied: n.applied_version,
                last_error: n.last_error,
            })
            .collect())
    }
}

fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(cs) = v["conditions"].as_array_mut() {
        for c in cs {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}

/// One policy's status. `times` holds each condition's last (status, transition time); a
/// condition keeps its time while its status stays.
fn status_of(
    t: &Tracked,
    nodes: &[NodeAck],
    now: &str,
    times: &Transitions,
) -> (Value, Transitions) {
    let generation = t.object.generation.unwrap_or(0);
    let total = nodes.len();
    let (revision, enforcing, accepted, enforced) = match &t.outcome {
        Outcome::Refused(why) => (
            0,
            0,
            (
                "False",
                "Refused",
                format!("Cellwall does not enforce this object: {why}"),
            ),
            (
                "False",
                "Refused",
                "refused: see the Accepted condition".to_string(),
            ),
        ),
        Outcome::Stored { revision: None, .. } => (
            0,
            0,
            ("True", "Valid", "read by the Cellwall manager".to_string()),
            (
                "Unknown",
                "NotStored",
                "not in the manager's store yet".to_string(),
            ),
        ),
        Outcome::Stored {
            revision: Some(rev),
            ..
        } => {
            let behind: Vec<&NodeAck> = nodes.iter().filter(|n| n.applied < *rev).collect();
            let n = total - behind.len();
            let enforced = if total == 0 {
                ("False", "NoNodes", "no node has joined".to_string())
            } else if behind.is_empty() {
                (
                    "True",
                    "AllNodes",
                    format!("all {total} nodes enforce revision {rev} or later"),
                )
            } else {
                let failing = behind.iter().find(|b| !b.last_error.is_empty());
                let why = match failing {
                    Some(b) => format!("; {} could not apply: {}", b.name, b.last_error),
                    None => format!("; waiting for {}", names(&behind)),
                };
                let reason = if failing.is_some() {
                    "NodesFailing"
                } else {
                    "Pending"
                };
                (
                    "False",
                    reason,
                    format!("{n} of {total} nodes enforce revision {rev}{why}"),
                )
            };
            (
                *rev,
                n,
                ("True", "Valid", "read by the Cellwall manager".to_string()),
                enforced,
            )
        }
    };
    let mut new_times = HashMap::new();
    let mut cond = |ty: &str, (status, reason, message): (&str, &str, String)| {
        let at = match times.get(ty) {
            Some((s, at)) if s == status => at.clone(),
            _ => now.to_string(),
        };
        new_times.insert(ty.to_string(), (status.to_string(), at.clone()));
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "observedGeneration": generation, "lastTransitionTime": at})
    };
    let conditions = vec![cond("Accepted", accepted), cond("Enforced", enforced)];
    let status = json!({
        "observedGeneration": generation,
        "revision": revision,
        "enforcedNodes": enforcing,
        "nodes": total,
        "enforced": format!("{enforcing}/{total}"),
        "conditions": conditions,
    });
    (status, new_times)
}

/// Up to three node names, then how many more.
fn names(nodes: &[&NodeAck]) -> String {
    let mut s: Vec<&str> = nodes.iter().take(3).map(|n| n.name.as_str()).collect();
    let more = nodes.len().saturating_sub(3);
    let tail = (more > 0).then(|| format!(" and {more} more"));
    s.sort_unstable();
    format!("{}{}", s.join(", "), tail.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(outcome: Outcome) -> Tracked {
        Tracked {
            resource: cellwall_kube::resource_of("cellwall.io/v1alpha1", "Policy").unwrap(),
            object: ObjectRef {
                api_version: "cellwall.io/v1alpha1".into(),
                kind: "Policy".into(),
                namespace: Some("shop".into()),
                name: "db".into(),
                uid: None,
                resource_version: None,
                generation: Some(3),
            },
            outcome,
        }
    }

    fn node(name: &str, applied: u64, err: &str) -> NodeAck {
        NodeAck {
            name: name.into(),
            applied,
            last_error: err.into(),
        }
    }

    fn stored(rev: u64) -> Outcome {
        Outcome::Stored {
            key: "Policy/shop/db".into(),
            revision: Some(rev),
        }
    }

    #[test]
    fn counts_nodes_at_or_past_the_revision() {
        let nodes = [node("a", 7, ""), node("b", 9, ""), node("c", 6, "")];
        let (s, _) = status_of(&tracked(stored(7)), &nodes, "T0", &HashMap::new());
        assert_eq!(s["enforced"], "2/3");
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["revision"], 7);
        assert_eq!(s["conditions"][1]["status"], "False");
        assert_eq!(s["conditions"][1]["reason"], "Pending");
        assert!(s["conditions"][1]["message"]
            .as_str()
            .unwrap()
            .contains("waiting for c"));
        let (s, _) = status_of(&tracked(stored(6)), &nodes, "T0", &HashMap::new());
        assert_eq!(s["conditions"][1]["status"], "True");
        assert_eq!(s["enforced"], "3/3");
    }

    #[test]
    fn a_failing_node_is_named_with_its_error() {
        let nodes = [node("a", 9, ""), node("b", 5, "map full")];
        let (s, _) = status_of(&tracked(stored(7)), &nodes, "T0", &HashMap::new());
        assert_eq!(s["conditions"][1]["reason"], "NodesFailing");
        assert!(s["conditions"][1]["message"]
            .as_str()
            .unwrap()
            .contains("b could not apply: map full"));
    }

    #[test]
    fn refused_and_nodeless_policies_say_why() {
        let (s, _) = status_of(
            &tracked(Outcome::Refused("spec.ingres: unknown field".into())),
            &[node("a", 9, "")],
            "T0",
            &HashMap::new(),
        );
        assert_eq!(s["conditions"][0]["status"], "False");
        assert!(s["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ingres"));
        assert_eq!(s["enforced"], "0/1");
        let (s, _) = status_of(&tracked(stored(1)), &[], "T0", &HashMap::new());
        assert_eq!(s["conditions"][1]["reason"], "NoNodes");
    }

    #[test]
    fn transition_times_move_only_when_the_status_does() {
        let nodes = [node("a", 5, "")];
        let (_, t1) = status_of(&tracked(stored(7)), &nodes, "T1", &HashMap::new());
        let (s, t2) = status_of(&tracked(stored(7)), &nodes, "T2", &t1);
        assert_eq!(s["conditions"][1]["lastTransitionTime"], "T1");
        let (s, _) = status_of(&tracked(stored(7)), &[node("a", 7, "")], "T3", &t2);
        assert_eq!(s["conditions"][1]["lastTransitionTime"], "T3");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "T1");
    }
}
