//! Quarantine and release: recorded like any change, enforced through the desired state
//! (see `state::quarantine`).

use crate::error::ManagerError;
use crate::manager::Manager;
use crate::state::quarantine_policy;
use crate::store::{Body, ChangeAction, Committed, Kind, QuarantineRecord, Write};
use cellwall_api::{QuarantineItem, QuarantineList, QuarantineRequest};
use cellwall_policy::WorkloadKey;

impl Manager {
    /// Cuts a workload off (or updates its quarantine).
    pub fn quarantine(
        &self,
        actor: &str,
        req: &QuarantineRequest,
    ) -> Result<Committed, ManagerError> {
        let k = WorkloadKey::parse(&req.workload).ok_or_else(|| {
            ManagerError::Invalid(format!("{}: expected NAMESPACE/NAME", req.workload))
        })?;
        if !self.published().doc.workloads.iter().any(|w| w.key() == k) {
            return Err(ManagerError::NotFound(format!("no workload {k}")));
        }
        let q = QuarantineRecord {
            workload: k.to_string(),
            reason: req.reason.clone().unwrap_or_default(),
            allow_from: req.allow_from.clone(),
        };
        quarantine_policy(&q)?; // validates the exception
        let detail = format!("{k}: {}", q.reason);
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Quarantine,
                key: k.to_string(),
                body: Some(Body::Quarantine(q)),
            }],
        )?;
        self.store.log_event(actor, "quarantine", &detail)?;
        self.publish()?;
        Ok(c)
    }

    pub fn release(&self, actor: &str, workload: &str) -> Result<Committed, ManagerError> {
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Quarantine,
                key: workload.to_string(),
                body: None,
            }],
        )?;
        if c.changes[0].action == ChangeAction::NotFound {
            return Err(ManagerError::NotFound(format!(
                "{workload} is not quarantined"
            )));
        }
        self.store.log_event(actor, "release", workload)?;
        self.publish()?;
        Ok(c)
    }

    pub fn quarantine_list(&self) -> Result<QuarantineList, ManagerError> {
        let items = self
            .store
            .current(Kind::Quarantine)?
            .into_iter()
            .filter_map(|c| {
                let Body::Quarantine(q) = c.body else {
                    return None;
                };
                Some(QuarantineItem {
                    workload: q.workload,
                    reason: q.reason,
                    allow_from: q.allow_from,
                    by: c.changed_by,
                    since_ms: c.changed_at_ms,
                })
            })
            .collect();
        Ok(QuarantineList { items })
    }
}
