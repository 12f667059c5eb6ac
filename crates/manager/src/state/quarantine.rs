//! What a quarantine means for the desired state: a label only the manager sets, and an
//! admin-tier policy ahead of every other that cuts the workload off both ways (but for an
//! optional management exception).

use crate::error::ManagerError;
use crate::store::QuarantineRecord;
use cellwall_policy::load::{parse_file, Object};
use cellwall_policy::{Policy, WorkloadKey};

/// The label a quarantined workload carries (value: its name).
pub const QUARANTINE_LABEL: &str = "quarantine.cellwall.io/pod";

/// Parses `k=v,k2=v2` into YAML `matchLabels`, or `cidr:X` into a CIDR peer.
fn exception_peer(s: &str) -> Result<String, ManagerError> {
    if let Some(c) = s.strip_prefix("cidr:") {
        let cidr: cellwall_policy::Cidr = c
            .parse()
            .map_err(|e| ManagerError::Invalid(format!("allow_from {s:?}: {e}")))?;
        return Ok(format!("{{cidr: {}}}", json(&cidr.to_string())));
    }
    let mut labels = Vec::new();
    for kv in s.split(',') {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(ManagerError::Invalid(format!(
                "allow_from {s:?}: expected k=v[,k=v...] (pod labels) or cidr:ADDR/LEN"
            )));
        };
        labels.push(format!("{}: {}", json(k.trim()), json(v.trim())));
    }
    Ok(format!(
        "{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{{}}}}}}}",
        labels.join(", ")
    ))
}

/// A YAML scalar, quoted (JSON strings are YAML).
fn json(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The policy that enforces `q`: admin tier, ahead of every other policy.
pub fn quarantine_policy(q: &QuarantineRecord) -> Result<Policy, ManagerError> {
    let k = WorkloadKey::parse(&q.workload)
        .ok_or_else(|| ManagerError::Invalid(format!("{}: expected NS/NAME", q.workload)))?;
    let exception = match &q.allow_from {
        Some(a) => format!(
            "  - name: management-exception\n    from: [{}]\n",
            exception_peer(a)?
        ),
        None => String::new(),
    };
    let yaml = format!(
        "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  tier: admin\n  priority: -1000000\n  podSelector: {{matchLabels: {{{label}: {pod}}}}}\n  ingress:\n{exception}  - name: quarantine\n    action: Deny\n    from: [{{entity: all}}]\n  egress:\n  - name: quarantine\n    action: Deny\n    to: [{{entity: all}}]\n",
        name = json(&format!("quarantine-{}", k.name)),
        ns = json(&k.namespace),
        label = json(QUARANTINE_LABEL),
        pod = json(&k.name),
    );
    let parsed = parse_file("quarantine", &yaml)
        .map_err(|e| ManagerError::Invalid(format!("quarantine policy: {e}")))?;
    match parsed.objects.into_iter().next().map(|o| o.object) {
        Some(Object::Policy(p)) => Ok(*p),
        _ => Err(ManagerError::Internal(
            "the quarantine policy did not parse".into(),
        )),
    }
}
