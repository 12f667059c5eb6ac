//! Flow records as agents reported them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the datapath decided for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
    /// Allowed, but an audit-mode policy would have denied it.
    Audit,
    /// An established connection cut by a policy change.
    Revoked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Audit => "audit",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "audit" => Self::Audit,
            "revoked" => Self::Revoked,
            _ => return None,
        })
    }
}

/// Which end decided: egress at the source, ingress at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    Ingress,
    Egress,
}

impl FlowDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ingress" => Self::Ingress,
            "egress" => Self::Egress,
            _ => return None,
        })
    }
}

/// One stored flow record (an aggregate of `count` identical connections).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FlowRecord {
    pub id: i64,
    pub time_unix_ns: u64,
    pub node: String,
    /// `namespace/name`, or the address when no workload owns it.
    pub src: String,
    pub dst: String,
    pub src_ip: String,
    pub dst_ip: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, or the protocol number.
    pub protocol: String,
    pub port: u16,
    pub verdict: Verdict,
    pub direction: FlowDirection,
    /// The deciding rule, described; none when no rule decided (default allow).
    pub rule: Option<String>,
    pub count: u64,
    /// The DNS names the node's workloads were given for `dst_ip` (FQDN policy); empty when
    /// none were learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_names: Vec<String>,
}

/// A node's loss counters: what never reached the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FlowLoss {
    pub kernel_events_lost: u64,
    pub agent_records_dropped: u64,
    pub batches_missed: u64,
}

/// `GET /v1/flows`: records oldest first, and every node's loss counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FlowList {
    pub flows: Vec<FlowRecord>,
    pub loss: BTreeMap<String, FlowLoss>,
}

/// The query of `GET /v1/flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    /// Only records newer than this, a duration like `30s`, `10m`, `2h`, `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
    /// Only records with an id above this (for following).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Only records with an id below this (paging back over history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Only records to this destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "verdict_param"
    )]
    pub verdict: Option<Verdict>,
    /// `namespace/name`: records with this workload at either end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[^/]+/[^/]+$")))]
    pub workload: Option<String>,
    /// Only records decided by this rule (as described in records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// At most this many records, 1..100000 (default 1000): the newest ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = 100_000)))]
    pub limit: Option<usize>,
}

/// `verdict=` with the message a person needs (serde's lists variants in backticks).
fn verdict_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Verdict>, D::Error> {
    let s = String::deserialize(d)?;
    Verdict::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "verdict={s}: expected allowed, denied, audit or revoked"
        ))
    })
}
