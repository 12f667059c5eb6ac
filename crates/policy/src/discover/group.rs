//! Application identity for learning: which workloads are one application, and the smallest
//! label set that selects exactly them. Labels are evidence, not the definition (Tetration's
//! dependency mapping): the controller is the strongest evidence, then the well-known
//! application labels, then behaviour — members of a label group that talk to different peers
//! or ports are split apart when a label can tell them apart.
//!
//! Cost: one pass over the flows for signatures, then per namespace a greedy cover per group
//! (groups × labels × workloads of the namespace); the 1,000,000-flow benchmark measures it.

pub use super::group_by::{GroupBy, GroupByError};
use super::{external_group, selector_text, Endpoint, HistFlow, REPLICA_LABELS};
use crate::labels::Labels;
use crate::model::{Inventory, Owner, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Labels that name an application, strongest first; a workload's candidate group is the
/// tuple of those it carries (so `app=shop,name=cart` is finer than `app=shop`). `role` and
/// `env` are what CMDB imports give hosts and VMs.
const WELL_KNOWN: [&str; 9] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app",
    "k8s-app",
    "name",
    "component",
    "role",
    "env",
];

/// One application as learning sees it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AppGroup {
    /// `namespace/...`, unique.
    pub id: String,
    pub namespace: String,
    /// `namespace/name` of each member.
    pub members: BTreeSet<String>,
    /// Which evidence decided: `owner Deployment/cart`, `labels app=shop,name=cart`,
    /// `workload`, …
    pub evidence: String,
    /// Why these members were split from a larger candidate group, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// The smallest label set that selects the members and no other workload of the
    /// namespace; `None` when no label set does (see `note`).
    pub selector: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For policy names: the controller's name, the application label's value, or the
    /// workload's name.
    pub short: String,
}

/// Workloads grouped into applications, with a lookup from workload to group.
#[derive(Debug, Clone, Default)]
pub struct Grouping {
    pub groups: Vec<AppGroup>,
    /// namespace → name → index in `groups` (looked up by `&str`, without allocating).
    of: HashMap<String, HashMap<String, usize>>,
}

struct Member {
    labels: Labels,
    owner: Option<Owner>,
    /// In the inventory now (not only in history): only such workloads must be left out of a
    /// selector — one gone since cannot be selected by mistake.
    live: bool,
}

type Key = (String, String);
/// (direction, peer's candidate group or external peer by number, protocol, port): what a
/// workload was seen doing.
type Sig = BTreeSet<(u8, u32, Protocol, u16)>;

/// The controller a pod's name and labels imply, when the inventory does not say (workloads
/// gone since, or declared without ownerReferences): Kubernetes names pods after it.
pub fn infer_owner(name: &str, labels: &Labels) -> Option<Owner> {
    let owner = |kind: &str, name: &str| {
        Some(Owner {
            kind: kind.into(),
            name: name.into(),
        })
    };
    if let Some(j) = labels
        .get("batch.kubernetes.io/job-name")
        .or(labels.get("job-name"))
    {
        return owner("Job", j);
    }
    if let Some(h) = labels.get("pod-template-hash") {
        if let Some(i) = name.find(&format!("-{h}-")).filter(|i| *i > 0) {
            return owner("Deployment", &name[..i]);
        }
    }
    let (base, tail) = name.rsplit_once('-')?;
    if labels
        .get("statefulset.kubernetes.io/pod-name")
        .map(String::as_str)
        == Some(name)
        && !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_digit())
    {
        return owner("StatefulSet", base);
    }
    if labels.contains_key("pod-template-generation")
        && labels.contains_key("controller-revision-hash")
        && tail.len() == 5
    {
        return owner("DaemonSet", base);
    }
    None
}

/// A workload's candidate group under `by`: (identity, evidence, short name).
fn candidate(by: &GroupBy, (ns, name): &Key, m: &Member) -> (String, String, String) {
    let labels_of = |keys: &[&str]| -> Labels {
        keys.iter()
            .filter_map(|k| m.labels.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
    };
    let by_labels = |l: Labels| {
        let short = l
            .iter()
            .min_by_key(|(k, _)| rank(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let t = selector_text(&l);
        (format!("l:{t}"), format!("labels {t}"), short)
    };
    let workload = || (format!("w:{name}"), "workload".into(), name.clone());
    match by {
        GroupBy::Namespace => ("n:".into(), "namespace".into(), ns.clone()),
        GroupBy::Workload => workload(),
        GroupBy::App => {
            let l = super::app_selector(&m.labels);
            if l.is_empty() {
                workload()
            } else {
                by_labels(l)
            }
        }
        GroupBy::Label(keys) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let l = labels_of(&keys);
            if l.is_empty() {
                workload()
            } else {
                by_labels(l)
            }
        }
        GroupBy::Owner | GroupBy::Auto => {
            if let Some(o) = &m.owner {
                return (format!("o:{o}"), format!("owner {o}"), o.name.clone());
            }
            let l = well_known(&m.labels);
            if by == &GroupBy::Owner || l.is_empty() {
                workload()
            } else {
                by_labels(l)
            }
        }
    }
}

fn jaccard(a: &Sig, b: &Sig) -> f64 {
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter).max(1) as f64
}

/// Members with the same non-replica labels, then label-distinct subgroups joined when they
/// serve the same ports and their behaviour overlaps by half or more. Silent subgroups stay
/// apart (isolated, least privilege). Returns clusters of label subgroups.
fn split_by_behaviour(
    members: &[Key],
    all: &BTreeMap<Key, Member>,
    sig: &HashMap<Key, Sig>,
) -> Vec<Vec<Vec<Key>>> {
    let mut by_labels: BTreeMap<Labels, Vec<Key>> = BTreeMap::new();
    for k in members {
        let l: Labels = all[k]
            .labels
            .iter()
            .filter(|(k, _)| !REPLICA_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        by_labels.entry(l).or_default().push(k.clone());
    }
    let subs: Vec<Vec<Key>> = by_labels.into_values().collect();
    if subs.len() < 2 {
        return vec![subs];
    }
    let sigs: Vec<Sig> = subs
        .iter()
        .map(|s| {
            s.iter()
                .filter_map(|k| sig.get(k))
                .flatten()
                .cloned()
                .collect()
        })
        .collect();
    // Union-find over subgroups.
    let mut parent: Vec<usize> = (0..subs.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    let served = |s: &Sig| -> BTreeSet<(Protocol, u16)> {
        s.iter()
            .filter(|(d, ..)| *d == 0)
            .map(|(_, _, p, n)| (*p, *n))
            .collect()
    };
    let served: Vec<_> = sigs.iter().map(served).collect();
    for i in 0..subs.len() {
        for j in i + 1..subs.len() {
            if !sigs[i].is_empty()
                && !sigs[j].is_empty()
                && served[i] == served[j]
                && jaccard(&sigs[i], &sigs[j]) >= 0.5
            {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[b] = a;
            }
        }
    }
    let mut out: BTreeMap<usize, Vec<Vec<Key>>> = BTreeMap::new();
    for (i, s) in subs.into_iter().enumerate() {
        out.entry(root(&mut parent, i)).or_default().push(s);
    }
    out.into_values().collect()
}

/// Key preference when choosing selector labels: application labels first, then any other.
fn rank(k: &str) -> usize {
    WELL_KNOWN
        .iter()
        .position(|w| *w == unimported(k))
        .unwrap_or(WELL_KNOWN.len())
}

/// A label key without the prefix `cellwall import` gives it (`cmdb.import.cellwall.io/role`
/// is a `role`): hosts and VMs are often known only by what a CMDB says.
fn unimported(k: &str) -> &str {
    k.split_once(".import.cellwall.io/")
        .map_or(k, |(_, rest)| rest)
}

/// The well-known application labels a workload carries, imported ones included.
fn well_known(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| WELL_KNOWN.contains(&unimported(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The smallest label set (greedy cover) shared by `members` that no other workload of the
/// namespace carries whole. `replica` allows per-pod labels (for workload granularity).
fn exact_selector(
    members: &BTreeSet<&Key>,
    others: &[&Member],
    all: &BTreeMap<Key, Member>,
    replica: bool,
) -> Option<Labels> {
    let first = &all[*members.iter().next()?].labels;
    let mut common: Vec<(&String, &String)> = first
        .iter()
        .filter(|(k, v)| {
            // Per workload, only the StatefulSet's stable pod name: template hashes change at
            // every rollout, and a selector on one would select nothing after it.
            (!REPLICA_LABELS.contains(&k.as_str())
                || (replica && k.as_str() == "statefulset.kubernetes.io/pod-name"))
                && members.iter().all(|m| all[*m].labels.get(*k) == Some(*v))
        })
        .collect();
    common.sort_by_key(|(k, _)| (rank(k), (*k).clone()));
    let mut sel = Labels::new();
    let mut left: Vec<&Member> = others.to_vec();
    // With nobody to exclude, still name the application so future replicas are selected;
    // with no label at all, selecting `{}` would take the namespace's future workloads too.
    if left.is_empty() {
        let (k, v) = common.first()?;
        sel.insert((*k).clone(), (*v).clone());
        return Some(sel);
    }
    while !left.is_empty() {
        let (k, v, n) = common
            .iter()
            .map(|(k, v)| {
                let n = left.iter().filter(|o| o.labels.get(*k) != Some(*v)).count();
                (*k, *v, n)
            })
            .fold(None::<(&String, &String, usize)>, |best, c| match best {
                Some(b) if b.2 >= c.2 => Some(b),
                _ => Some(c),
            })?;
        if n == 0 {
            return None;
        }
        sel.insert(k.clone(), v.clone());
        left.retain(|o| o.labels.get(k) == Some(v));
    }
    Some(sel)
}

impl Grouping {
    /// Groups the inventory's workloads (host-network ones excepted) and every workload the
    /// history names. Deterministic: the same inputs give the same groups in the same order.
    pub fn build(flows: &[HistFlow], inv: &Inventory, by: &GroupBy) -> Self {
        let mut all: BTreeMap<Key, Member> = BTreeMap::new();
        for w in inv.workloads.values().filter(|w| !w.host_network) {
            all.insert(
                (w.namespace.clone(), w.name.clone()),
                Member {
                    labels: Labels::clone(&w.labels),
                    owner: w.owner.clone(),
                    live: true,
                },
            );
        }
        for f in flows {
            for ep in [&f.src, &f.dst] {
                if let Endpoint::Workload {
                    namespace,
                    name,
                    labels,
                } = ep
                {
                    all.entry((namespace.clone(), name.clone()))
                        .or_insert_with(|| Member {
                            labels: labels.clone(),
                            live: false,
                            owner: None,
                        });
                }
            }
        }
        for ((_, name), m) in all.iter_mut() {
            if m.owner.is_none() {
                m.owner = infer_owner(name, &m.labels);
            }
        }
        // Candidate groups, per namespace.
        // Candidate groups are numbered for behaviour signatures (peers by number).
        let mut cand_of: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let mut cand_no: HashMap<(String, String), u32> = HashMap::new();
        let mut cands: BTreeMap<(String, String), (String, String, Vec<Key>)> = BTreeMap::new();
        for (k, m) in &all {
            let (id, evidence, short) = candidate(by, k, m);
            let n = cand_no.len() as u32;
            let n = *cand_no.entry((k.0.clone(), id.clone())).or_insert(n);
            cand_of
                .entry(k.0.clone())
                .or_default()
                .insert(k.1.clone(), n);
            cands
                .entry((k.0.clone(), id))
                .or_insert_with(|| (evidence, short, Vec::new()))
                .2
                .push(k.clone());
        }
        let sig = if by == &GroupBy::Auto {
            signatures(flows, &cand_of, cand_no.len() as u32)
        } else {
            HashMap::new()
        };
        let mut g = Grouping::default();
        let mut ns_members: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
        for k in all.keys() {
            ns_members.entry(&k.0).or_default().push(k);
        }
        for ((ns, id), (evidence, short, members)) in &cands {
            let parts = if by == &GroupBy::Auto && id.starts_with("l:") && members.len() > 1 {
                split_by_behaviour(members, &all, &sig)
            } else {
                vec![vec![members.clone()]]
            };
            let split = parts.len() > 1;
            for cluster in parts {
                let split = split.then(|| {
                    format!(
                        "split from {} ({} workloads): its traffic overlaps less than half with \
                         the others'",
                        evidence.trim_start_matches("labels "),
                        members.len()
                    )
                });
                let ns_all = &ns_members[ns.as_str()];
                // Label subgroups that behave alike are one application when a label set
                // selects them together; otherwise each on its own.
                let whole: Vec<Key> = cluster.iter().flatten().cloned().collect();
                if cluster.len() > 1 && !g.selectable(&whole, &all, ns_all) {
                    for sub in &cluster {
                        g.add(ns, sub, evidence, split.clone(), short, &all, ns_all);
                    }
                } else {
                    g.add(ns, &whole, evidence, split, short, &all, ns_all);
                }
            }
        }
        g.unique_ids();
        g
    }

    fn selectable(&self, part: &[Key], all: &BTreeMap<Key, Member>, ns_all: &[&Key]) -> bool {
        let members: BTreeSet<&Key> = part.iter().collect();
        let others: Vec<&Member> = ns_all
            .iter()
            .filter(|k| !members.contains(*k))
            .map(|k| &all[*k])
            .filter(|m| m.live)
            .collect();
        exact_selector(&members, &others, all, false).is_some()
    }

    /// Adds one group with its exact selector; when no label set separates it, one group per
    /// member (workload granularity), each with its own selector if any exists.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        ns: &str,
        part: &[Key],
        evidence: &str,
        split: Option<String>,
        short: &str,
        all: &BTreeMap<Key, Member>,
        ns_all: &[&Key],
    ) {
        let members: BTreeSet<&Key> = part.iter().collect();
        let others = |m: &BTreeSet<&Key>| -> Vec<&Member> {
            ns_all
                .iter()
                .filter(|k| !m.contains(*k))
                .map(|k| &all[*k])
                .filter(|m| m.live)
                .collect()
        };
        let selector = exact_selector(&members, &others(&members), all, false);
        let mut push = |members: &BTreeSet<&Key>,
                        selector: Option<Labels>,
                        note,
                        short: &str,
                        evidence: String| {
            let i = self.groups.len();
            // A split group is named by the label that told it apart.
            let short = match (&split, &selector) {
                (Some(_), Some(sel)) => sel
                    .iter()
                    .min_by_key(|(k, _)| rank(k))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| short.to_string()),
                _ => short.to_string(),
            };
            for m in members {
                self.of
                    .entry(m.0.clone())
                    .or_default()
                    .insert(m.1.clone(), i);
            }
            let id = match &selector {
                Some(s) if !Labels::is_empty(s) && evidence.starts_with("labels") => {
                    format!("{ns}/{}", selector_text(s))
                }
                _ => format!("{ns}/{short}"),
            };
            self.groups.push(AppGroup {
                id,
                namespace: ns.to_string(),
                members: members.iter().map(|(n, w)| format!("{n}/{w}")).collect(),
                evidence,
                split: split.clone(),
                selector,
                note,
                short,
            });
        };
        if selector.is_some() || members.len() == 1 {
            let note = selector.is_none().then(|| {
                "no label set selects this workload without others: its traffic is not proposed"
                    .to_string()
            });
            return push(&members, selector, note, short, evidence.to_string());
        }
        for m in members.iter().copied() {
            let one: BTreeSet<&Key> = [m].into();
            let sel = exact_selector(&one, &others(&one), all, true);
            let note = Some(match sel {
                Some(_) => format!(
                    "no label set selects {evidence} without other workloads: one policy per \
                     workload"
                ),
                None => "no label set selects this workload without others: its traffic is \
                         not proposed"
                    .to_string(),
            });
            push(&one, sel, note, &m.1, format!("workload (of {evidence})"));
        }
    }

    fn unique_ids(&mut self) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for g in &mut self.groups {
            let n = seen.entry(g.id.clone()).or_default();
            *n += 1;
            if *n > 1 {
                g.id = format!("{}#{n}", g.id);
            }
        }
    }

    /// The group of a workload endpoint; `None` for external addresses.
    pub fn of(&self, ep: &Endpoint) -> Option<&AppGroup> {
        self.index_of(ep).map(|i| &self.groups[i])
    }

    /// The index in `groups` of a workload endpoint's group.
    pub fn index_of(&self, ep: &Endpoint) -> Option<usize> {
        match ep {
            Endpoint::Workload {
                namespace, name, ..
            } => self.of.get(namespace.as_str())?.get(name.as_str()).copied(),
            Endpoint::External { .. } => None,
        }
    }

    /// The map node of an endpoint: its group, or its network or DNS name.
    pub fn node_id(&self, ep: &Endpoint) -> String {
        match (self.of(ep), ep) {
            (Some(g), _) => g.id.clone(),
            (None, Endpoint::External { ip, names }) => match names.first() {
                Some(n) => n.clone(),
                None => external_group(*ip),
            },
            (None, e) => e.describe(),
        }
    }
}

/// What each workload was seen doing, with peers named by their candidate group's number
/// (external peers by network or DNS name, numbered past the candidates).
fn signatures(
    flows: &[HistFlow],
    cand_of: &HashMap<String, HashMap<String, u32>>,
    candidates: u32,
) -> HashMap<Key, Sig> {
    let mut externals: HashMap<String, u32> = HashMap::new();
    let mut id = |ep: &Endpoint| -> u32 {
        match ep {
            Endpoint::Workload {
                namespace, name, ..
            } => cand_of
                .get(namespace.as_str())
                .and_then(|m| m.get(name.as_str()))
                .copied()
                .unwrap_or(u32::MAX),
            Endpoint::External { ip, names } => {
                let e = names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| external_group(*ip));
                let n = candidates + externals.len() as u32;
                *externals.entry(e).or_insert(n)
            }
        }
    };
    let mut sig: HashMap<&str, HashMap<&str, Sig>> = HashMap::new();
    for f in flows.iter().filter(|f| f.observed.happened()) {
        let (s, d) = (id(&f.src), id(&f.dst));
        for (ep, dir, peer) in [(&f.src, 1, d), (&f.dst, 0, s)] {
            if let Endpoint::Workload {
                namespace, name, ..
            } = ep
            {
                sig.entry(namespace)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert((dir, peer, f.protocol, f.port));
            }
        }
    }
    sig.into_iter()
        .flat_map(|(ns, m)| {
            m.into_iter()
                .map(move |(n, s)| ((ns.to_string(), n.to_string()), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_are_read_from_the_names_kubernetes_gives_pods() {
        let l = |p: &[(&str, &str)]| -> Labels {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let o = |name: &str, labels: Labels| infer_owner(name, &labels).map(|o| o.to_string());
        assert_eq!(
            o(
                "cart-7d9f8c6b5-x2k4q",
                l(&[("pod-template-hash", "7d9f8c6b5")])
            )
            .as_deref(),
            Some("Deployment/cart")
        );
        // A hash the name does not carry says nothing.
        assert_eq!(o("cart", l(&[("pod-template-hash", "7d9f8c6b5")])), None);
        assert_eq!(
            o(
                "db-2",
                l(&[
                    ("statefulset.kubernetes.io/pod-name", "db-2"),
                    ("controller-revision-hash", "db-5c7b9")
                ])
            )
            .as_deref(),
            Some("StatefulSet/db")
        );
        assert_eq!(
            o(
                "fluentd-8kq2z",
                l(&[
                    ("controller-revision-hash", "6b9d"),
                    ("pod-template-generation", "3")
                ])
            )
            .as_deref(),
            Some("DaemonSet/fluentd")
        );
        assert_eq!(
            o(
                "backup-28391-abcde",
                l(&[("batch.kubernetes.io/job-name", "backup-28391")])
            )
            .as_deref(),
            Some("Job/backup-28391")
        );
        assert_eq!(o("plain", Labels::new()), None);
        for (s, ok) in [
            ("auto", true),
            ("label:app", true),
            ("label:a,b", true),
            ("label:", false),
            ("label:a,", false),
            ("label:a=b", false),
            ("owners", false),
        ] {
            assert_eq!(s.parse::<GroupBy>().is_ok(), ok, "{s}");
            if ok {
                assert_eq!(s.parse::<GroupBy>().unwrap().to_string(), s);
            }
        }
    }
}
