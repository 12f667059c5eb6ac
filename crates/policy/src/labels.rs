//! Labels and label selectors with the exact Kubernetes semantics
//! (`k8s.io/apimachinery/pkg/labels`): matchLabels AND matchExpressions, `NotIn` and
//! `DoesNotExist` match objects that lack the key, an empty selector matches everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A label set. `BTreeMap` so iteration (and therefore identities and output) is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A workload's label set, shared copy-on-write: pods of one controller carry the same labels,
/// and one map per pod was the largest part of an agent's model (a B-tree leaf of ~544 bytes
/// each, 54 MB at 100,000 pods). Reads see a `Labels`; a write (`DerefMut`) copies the map
/// first when it is shared, so sharing never changes what another holder sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SharedLabels(std::sync::Arc<Labels>);

/// The wire form is the plain map, and so is the schema (inline, as before).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for SharedLabels {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Labels::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Labels::json_schema(g)
    }
}

/// Equal label sets resolved to one shared map: the decode-time pool ([`interning`]) and the
/// engine's workload records use it. Sets nothing else holds any more are dropped in sweeps that
/// run when the pool has doubled, so the cost stays constant per insert.
#[derive(Debug, Clone, Default)]
pub struct LabelPool {
    sets: std::collections::HashSet<SharedLabels>,
    swept_at: usize,
}

impl LabelPool {
    /// The pooled map equal to `l` (`l` itself when it is the first of its kind).
    pub fn share(&mut self, l: &SharedLabels) -> SharedLabels {
        if let Some(s) = self.sets.get(l) {
            return s.clone();
        }
        if self.sets.len() >= 2 * self.swept_at.max(512) {
            self.sets.retain(|s| std::sync::Arc::strong_count(&s.0) > 1);
            self.swept_at = self.sets.len();
        }
        self.sets.insert(l.clone());
        l.clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sets.len()
    }
}

impl<'de> serde::Deserialize<'de> for SharedLabels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = Self::from(Labels::deserialize(d)?);
        Ok(POOL.with_borrow_mut(|pool| match pool {
            Some(pool) => pool.share(&l),
            None => l,
        }))
    }
}

thread_local! {
    /// The label sets [`interning`] has seen on this thread (none outside it).
    static POOL: std::cell::RefCell<Option<LabelPool>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a decode) with equal workload label sets decoded into one shared map: each
/// decoded map is dropped as soon as an equal one is known, so a snapshot of 100,000 pods never
/// holds 100,000 maps at once.
pub fn interning<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            POOL.set(None);
        }
    }
    POOL.set(Some(LabelPool::default()));
    let _reset = Reset;
    f()
}

impl From<Labels> for SharedLabels {
    fn from(l: Labels) -> Self {
        Self(std::sync::Arc::new(l))
    }
}

impl std::ops::Deref for SharedLabels {
    type Target = Labels;
    fn deref(&self) -> &Labels {
        &self.0
    }
}

impl std::ops::DerefMut for SharedLabels {
    fn deref_mut(&mut self) -> &mut Labels {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl<const N: usize> From<[(String, String); N]> for SharedLabels {
    fn from(a: [(String, String); N]) -> Self {
        Labels::from(a).into()
    }
}

impl PartialEq<Labels> for SharedLabels {
    fn eq(&self, other: &Labels) -> bool {
        *self.0 == *other
    }
}

impl FromIterator<(String, String)> for SharedLabels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(it: I) -> Self {
        Labels::from_iter(it).into()
    }
}

impl<'a> IntoIterator for &'a SharedLabels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Operator of a `matchExpressions` requirement.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Self::In,
            "NotIn" => Self::NotIn,
            "Exists" => Self::Exists,
            "DoesNotExist" => Self::DoesNotExist,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One `matchExpressions` entry.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self.operator {
            Operator::In => labels
                .get(&self.key)
                .is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => labels
                .get(&self.key)
                .is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => labels.contains_key(&self.key),
            Operator::DoesNotExist => !labels.contains_key(&self.key),
        }
    }
}

/// A Kubernetes `LabelSelector`. The empty selector selects everything.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn from_labels<I, K, V>(labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    /// kubectl-style rendering: `app=web,tier in (a,b),!debug`; `{}` when it selects everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            let vals = r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({vals})", r.key),
                Operator::NotIn => format!("{} notin ({vals})", r.key),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

/// Validates a label key or value the way the API server would (qualified name / label value),
/// returning what is wrong.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err(format!(
                "label key {key:?}: prefix must be a DNS subdomain of 1-253 characters"
            ));
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(format!(
                "label key {key:?}: prefix must be lowercase alphanumerics, '-' or '.'"
            ));
        }
    }
    validate_name_part(name).map_err(|e| format!("label key {key:?}: {e}"))
}

pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name_part(value).map_err(|e| format!("label value {value:?}: {e}"))
}

fn validate_name_part(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1-63 characters".into());
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let first = s.chars().next().unwrap_or('-');
    let last = s.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() || !s.chars().all(ok_inner) {
        return Err(
            "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_label_pool_shares_equal_sets_and_forgets_sets_nobody_holds() {
        let set = |v: &str| SharedLabels::from([("app".to_string(), v.to_string())]);
        let mut pool = LabelPool::default();
        let first = set("web");
        let a = pool.share(&first);
        let b = pool.share(&set("web"));
        assert!(std::sync::Arc::ptr_eq(&a.0, &first.0) && std::sync::Arc::ptr_eq(&b.0, &a.0));
        assert!(!std::sync::Arc::ptr_eq(&pool.share(&set("db")).0, &a.0));
        // Sets only the pool holds go in the next sweep (once the pool has doubled).
        for i in 0..2000 {
            drop(pool.share(&set(&i.to_string())));
        }
        assert!(pool.len() < 1100, "{}", pool.len());
        // A set still held elsewhere stays shared across sweeps.
        assert!(std::sync::Arc::ptr_eq(&pool.share(&set("web")).0, &a.0));
    }

    #[test]
    fn shared_labels_decode_into_one_map_and_copy_on_write() {
        let text = r#"[{"app":"web"},{"app":"web"},{"app":"db"}]"#;
        let mut v: Vec<SharedLabels> = interning(|| serde_json::from_str(text)).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&v[0].0, &v[1].0),
            "equal sets share one map"
        );
        assert!(!std::sync::Arc::ptr_eq(&v[0].0, &v[2].0));
        // A write to one holder's set never shows through another's.
        v[1].insert("tier".into(), "front".into());
        assert_eq!(v[0], labels(&[("app", "web")]));
        assert_eq!(v[1], labels(&[("app", "web"), ("tier", "front")]));
        // Outside `interning` nothing is pooled, also after a decode that failed inside it.
        let bad: Result<Vec<SharedLabels>, _> = interning(|| serde_json::from_str(r#"[{"a":1}]"#));
        assert!(bad.is_err());
        let w: Vec<SharedLabels> = serde_json::from_str(text).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&w[0].0, &w[1].0));
        // The wire form is the plain map.
        assert_eq!(serde_json::to_string(&v[0]).unwrap(), r#"{"app":"web"}"#);
    }

    fn req(key: &str, op: Operator, vals: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op,
            values: vals.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::everything().matches(&Labels::new()));
        assert!(LabelSelector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let mut s = LabelSelector::from_labels([("app", "web")]);
        s.match_expressions
            .push(req("tier", Operator::In, &["fe", "be"]));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "fe")])));
    }

    #[test]
    fn notin_and_doesnotexist_match_missing_keys() {
        let l = labels(&[("x", "1")]);
        assert!(req("pod", Operator::NotIn, &["a"]).matches(&l));
        assert!(!req("pod", Operator::In, &["a"]).matches(&l));
        assert!(req("pod", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!req("pod", Operator::Exists, &[]).matches(&l));
        assert!(!req("x", Operator::NotIn, &["1"]).matches(&l));
        assert!(req("x", Operator::NotIn, &["2"]).matches(&l));
    }

    #[test]
    fn label_key_validation() {
        assert!(validate_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("-app").is_err());
        assert!(validate_label_key("/app").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("a b").is_err());
    }

    #[test]
    fn display_is_kubectl_like() {
        let mut s = LabelSelector::from_labels([("app", "web")]);
        s.match_expressions
            .push(req("env", Operator::NotIn, &["dev"]));
        s.match_expressions
            .push(req("debug", Operator::DoesNotExist, &[]));
        assert_eq!(s.to_string(), "app=web,env notin (dev),!debug");
    }
}
