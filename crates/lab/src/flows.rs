//! The lab's flows as the manager stored them, with the kernel datapath's own totals.

use crate::error::Result;
use crate::state::{pin_dir, DatapathKind, LabState};
use cellwall_api::client::Client;
use cellwall_api::{FlowList, FlowQuery};
use cellwall_datapath::KernelDatapath;
use serde::Serialize;

/// The datapath's counters since the lab's programs were loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DatapathTotals {
    pub allowed: u64,
    pub denied: u64,
    pub audit: u64,
    pub revoked: u64,
    pub events_lost: u64,
}

/// `lab flows`: the manager's answer, and the datapath's totals (none with `--datapath none`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabFlows {
    #[serde(flatten)]
    pub list: FlowList,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath: Option<DatapathTotals>,
}

/// The newest flow records of lab `name` (up to 100,000).
pub fn flows(name: &str) -> Result<LabFlows> {
    let state = LabState::load(name)?;
    let list = Client::for_lab(name)?.flows(&FlowQuery {
        limit: Some(100_000),
        ..Default::default()
    })?;
    let datapath = if state.datapath == DatapathKind::Ebpf {
        let k = KernelDatapath::open(&pin_dir(name))?.counters()?;
        Some(DatapathTotals {
            allowed: k.allowed,
            denied: k.denied,
            audit: k.audit,
            revoked: k.revoked,
            events_lost: k.events_lost,
        })
    } else {
        None
    };
    Ok(LabFlows { list, datapath })
}
