//! `--group-by`: how learning groups workloads, as the text the CLI and the REST API take.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How learning groups workloads into applications.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// Controller, well-known labels, then behaviour (the default).
    #[default]
    Auto,
    /// `app`, else `app.kubernetes.io/name`, else `k8s-app`, else all labels (the first
    /// round's grouping; compliance alerts still name groups this way).
    App,
    /// The values of these label keys.
    Label(Vec<String>),
    /// The controller (Deployment, StatefulSet, DaemonSet, Job).
    Owner,
    Workload,
    Namespace,
}

/// An unknown or malformed `--group-by` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group-by {0:?}: expected auto, app, owner, workload, namespace or label:KEY[,KEY]")]
pub struct GroupByError(pub String);

impl FromStr for GroupBy {
    type Err = GroupByError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "app" => Self::App,
            "owner" => Self::Owner,
            "workload" => Self::Workload,
            "namespace" => Self::Namespace,
            _ => {
                let keys: Vec<String> = s
                    .strip_prefix("label:")
                    .ok_or_else(|| GroupByError(s.into()))?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                let bad = |k: &String| k.is_empty() || k.len() > 317 || k.contains(['=', ' ']);
                if keys.iter().any(bad) {
                    return Err(GroupByError(s.into()));
                }
                Self::Label(keys)
            }
        })
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::App => f.write_str("app"),
            Self::Owner => f.write_str("owner"),
            Self::Workload => f.write_str("workload"),
            Self::Namespace => f.write_str("namespace"),
            Self::Label(k) => write!(f, "label:{}", k.join(",")),
        }
    }
}

impl Serialize for GroupBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
