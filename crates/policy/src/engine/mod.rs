//! The evaluator: inventory + policies, indexed by identity so a flow is decided by looking only
//! at the policies that select its two ends. `evaluate` is the reference semantics that the
//! compiled tables and the kernel datapath are tested against; `explain` walks the same code with
//! a trace.
//!
//! Precedence, per direction (egress at the source, ingress at the destination; both must allow):
//! 1. admin tier (ClusterNetworkPolicy `tier: Admin`, AdminNetworkPolicy, Cellwall
//!    `tier: admin`): policies by priority, rules in order, first match decides; `Pass` skips
//!    to the application tier.
//! 2. application tier (NetworkPolicy, Cellwall `tier: application`): if any policy isolates the
//!    workload in this direction, a matching deny wins, else a matching allow admits, else denied.
//! 3. baseline tier (ClusterNetworkPolicy `tier: Baseline`, BaselineAdminNetworkPolicy, Cellwall
//!    `tier: baseline`): first match decides; `Pass` ends the tier (the default decides).
//! 4. otherwise allowed.
//!
//! Audit-mode policies are left out of the enforced verdict; the audit verdict is the same walk
//! with them included. Expired policies and rules are left out of both.
//!
//! Modules: `index` keeps the indexes in step with incremental changes, `lookup` reads them,
//! `evaluate` decides, `explain` traces, `names` holds what DNS said addresses are, `view` is how the two ends of a flow look to a rule, and
//! `query` is the narrow API the compiler builds its tables with.

mod evaluate;
mod explain;
mod index;
mod lookup;
mod names;
mod query;
mod verdict;
mod view;

pub use evaluate::DirQuery;
pub use explain::{DirectionTrace, Explanation, PolicyTrace, RuleTrace, TierTrace};
pub use query::{AppliedPolicy, AppliedRule};
pub use verdict::{AuditOutcome, Decision, DirVerdict, Flow, IdentityInfo, Reason, RuleInfo};
pub use view::{peer_matches, port_matches, subject_selects, Addr, EndpointKind, EndpointView};

use crate::fxhash::FxHashMap;
use crate::identity::IdentityAllocator;
use crate::model::{Inventory, Policy, PolicyId, WorkloadKey};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use view::EpRef;

/// A policy as indexed: the policy, the ids of its rules, and the identities it selects.
#[derive(Debug, Clone)]
struct PolicySlot {
    /// Shared with the agent's model (a policy's selectors and rules held once, not twice).
    policy: std::sync::Arc<Policy>,
    /// Parallel to `policy.rules`.
    rule_ids: Vec<u32>,
    /// Implicit isolation rule per direction.
    isolation_rule: [u32; 2],
    subjects: BTreeSet<u32>,
}

/// Policies selecting one identity, per direction, in evaluation order, and whether any of them
/// is in audit mode (so the audit pass can be skipped when none is).
#[derive(Debug, Clone, Default)]
struct Applicable {
    lists: [Vec<usize>; 2],
    audit: [bool; 2],
}

/// Changes since the last [`Engine::take_changes`], for incremental compilation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Policies added, changed or removed.
    pub policies: BTreeSet<PolicyId>,
    /// Label identities whose subject policies changed, or that appeared or disappeared.
    pub identities: BTreeSet<u32>,
    /// Workloads added, changed (labels, IPs, ports, node) or removed.
    pub workloads: BTreeSet<WorkloadKey>,
    /// Nodes added, changed or removed.
    pub nodes: BTreeSet<String>,
    /// Addresses whose DNS names changed (`Engine::set_names`).
    pub names: BTreeSet<IpAddr>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.identities.is_empty()
            && self.workloads.is_empty()
            && self.nodes.is_empty()
            && self.names.is_empty()
    }
}

/// The policy engine. All mutation is incremental: a relabel touches one identity against all
/// policies, a policy change touches one policy against all identities.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    inv: Inventory,
    now: i64,
    slots: Vec<Option<PolicySlot>>,
    free: Vec<usize>,
    by_id: HashMap<PolicyId, usize>,
    ids: IdentityAllocator,
    identities: HashMap<u32, IdentityInfo>,
    /// Label identities per namespace: a policy whose subject names its namespace (every
    /// namespaced kind) is matched against these only, not against every identity.
    ns_identities: HashMap<String, BTreeSet<u32>>,
    wl_identity: HashMap<WorkloadKey, u32>,
    members: HashMap<u32, BTreeSet<WorkloadKey>>,
    /// Per identity, per direction: policy slots sorted by (tier, priority, id).
    applicable: FxHashMap<u32, Applicable>,
    ip_index: FxHashMap<IpAddr, EpRef>,
    /// Each namespace's name and labels as the indexed workloads share them (`index_workload`).
    ns_recs: HashMap<String, std::sync::Arc<view::NsRec>>,
    /// The indexed workloads' label sets, one map per distinct set.
    label_pool: crate::labels::LabelPool,
    rule_ids: IdentityAllocator,
    rules: HashMap<u32, RuleInfo>,
    /// DNS names of addresses outside the inventory (`names.rs`).
    names: FxHashMap<IpAddr, Vec<String>>,
    changes: Changes,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an engine from a whole inventory and policy set.
    pub fn build<P: Into<std::sync::Arc<Policy>>>(
        inv: Inventory,
        policies: impl IntoIterator<Item = P>,
        now: i64,
    ) -> Self {
        let mut e = Engine {
            now,
            ..Default::default()
        };
        for n in inv.namespaces.into_values() {
            e.set_namespace(n);
        }
        for n in inv.nodes.into_values() {
            e.set_node(n);
        }
        for w in inv.workloads.into_values() {
            e.set_workload(w);
        }
        let mut ps: Vec<std::sync::Arc<Policy>> = policies.into_iter().map(Into::into).collect();
        ps.sort_by(|a, b| a.id.cmp(&b.id));
        for p in ps {
            e.set_policy(p);
        }
        e.take_changes();
        e
    }
}
