//! What a quarantine means for the desired state: a label only the manager sets, and an
//! admin-tier policy ahead of every other that cuts the workload off both ways (but for an
//! optional management exception).

use crate::error::ManagerError;
use crate::store::QuarantineRecord;
use cellwall_policy::load::{parse_file, Object};
use cellwall_policy::{Policy, WorkloadKey};

/// The label a quarantined workload carries (value: [`quarantine_mark`] of its key).
pub const QUARANTINE_LABEL: &str = "quarantine.cellwall.io/pod";

/// The label value that marks one workload: a hash of its `namespace/name`, since a name may be
/// longer than a label value may be (63) or hold characters a label value may not (a host named
/// `evil_host.`); 64 bits make a collision between two quarantined workloads negligible.
pub fn quarantine_mark(key: &WorkloadKey) -> String {
    format!(
        "q{:016x}",
        cellwall_policy::identity::fnv1a(&key.to_string())
    )
}

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
        name = json(&format!("quarantine-{}", quarantine_mark(&k))),
        ns = json(&k.namespace),
        label = json(QUARANTINE_LABEL),
        pod = json(&quarantine_mark(&k)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn q(workload: &str) -> QuarantineRecord {
        QuarantineRecord {
            workload: workload.into(),
            reason: String::new(),
            allow_from: None,
        }
    }

    #[test]
    fn every_valid_name_can_be_quarantined() {
        let long = format!("ns/{}", "a".repeat(70));
        let longest = format!("ns/{}", "b".repeat(253));
        for w in [
            "prod/db",
            long.as_str(),
            longest.as_str(),
            "hosts/evil_host.",
            "x/a.b-c",
        ] {
            let p = quarantine_policy(&q(w)).unwrap_or_else(|e| panic!("{w}: {e}"));
            assert!(p.id.name.len() <= 63, "{}", p.id.name);
        }
        let a = quarantine_mark(&WorkloadKey::parse("prod/db").unwrap());
        let b = quarantine_mark(&WorkloadKey::parse("prod/db2").unwrap());
        assert_ne!(a, b);
        assert!(cellwall_policy::labels::validate_label_value(&a).is_ok());
    }
}
