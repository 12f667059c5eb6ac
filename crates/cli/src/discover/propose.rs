//! `cellwall propose`: the manager's proposal as YAML that applies as is (evidence in comments)
//! or as a JSON `v1 List` (evidence in an annotation).

use crate::client::Target;
use anyhow::Result;
use cellwall_api::{GroupBy, ProposalKind, ProposeQuery, ProposeResponse};
use serde_json::{json, Value};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalFormat {
    Cellwall,
    Networkpolicy,
    Clusternetworkpolicy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlOrJson {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ProposeArgs {
    /// History window the proposal learns from.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only propose policies for workloads of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Cellwall's own Policy kind, standard Kubernetes NetworkPolicy, or ClusterNetworkPolicy
    /// (v1alpha2, baseline tier: the observed edges accepted, everything else from pods
    /// denied; observed ingress from outside the cluster is listed as a comment, since CNP
    /// ingress peers are pods only).
    #[arg(long, value_enum, default_value = "cellwall")]
    pub format: ProposalFormat,
    /// Rules seen fewer times than this are flagged for review.
    #[arg(long, default_value_t = 3)]
    pub review_below: u64,
    #[arg(long, default_value = "auto", help = super::GROUP_BY_HELP)]
    pub group_by: GroupBy,
    /// Save the proposal in the manager as a draft for review (cellwall review NAME) instead
    /// of printing it.
    #[arg(long, value_name = "NAME")]
    pub save: Option<String>,
    /// With --save: replace a draft of that name (its decisions are lost).
    #[arg(long, requires = "save")]
    pub replace: bool,
    /// yaml: manifests with each rule's evidence as comments; json: a v1 List whose policies
    /// carry their evidence in the cellwall.io/evidence annotation. Both apply as they are.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: YamlOrJson,
    #[command(flatten)]
    pub target: Target,
}

pub fn propose(a: ProposeArgs) -> Result<()> {
    let c = a.target.client()?;
    if let Some(name) = &a.save {
        let d = c.save_draft(&cellwall_api::DraftRequest {
            name: name.clone(),
            since: Some(a.since.clone()),
            namespace: a.namespace.clone(),
            group_by: Some(a.group_by.clone()),
            review_below: Some(a.review_below),
            replace: a.replace,
        })?;
        if a.output == YamlOrJson::Json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            println!(
                "draft {name}: {} policies, {} rules to review (cellwall review {name})",
                d.proposal.policies.len(),
                d.rules.len()
            );
        }
        return Ok(());
    }
    let v = c.propose(&ProposeQuery {
        since: Some(a.since.clone()),
        namespace: a.namespace.clone(),
        format: Some(match a.format {
            ProposalFormat::Cellwall => ProposalKind::Cellwall,
            ProposalFormat::Networkpolicy => ProposalKind::NetworkPolicy,
            ProposalFormat::Clusternetworkpolicy => ProposalKind::ClusterNetworkPolicy,
        }),
        review_below: Some(a.review_below),
        group_by: Some(a.group_by.clone()),
    })?;
    let p = &v.proposal;
    let review = p
        .policies
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress))
        .filter(|r| r.evidence.review)
        .count();
    let split = p.groups.iter().filter(|g| g.split.is_some()).count();
    let unselectable = p.groups.iter().filter(|g| g.selector.is_none()).count();
    eprintln!(
        "{} applications (grouped by {}; {} split by behaviour, {} no label set selects), {} \
         policies from {} observed connections ({} rules flagged for review, {} flows excluded)",
        p.groups.len(),
        a.group_by,
        split,
        unselectable,
        p.policies.len(),
        p.flows_considered,
        review,
        p.excluded.len()
    );
    match a.output {
        YamlOrJson::Yaml => print!("{}", v.yaml),
        YamlOrJson::Json => println!("{}", serde_json::to_string_pretty(&as_list(&v)?)?),
    }
    Ok(())
}

/// The proposal's YAML documents as a `v1 List`, each policy with its evidence annotated.
fn as_list(v: &ProposeResponse) -> Result<Value> {
    let docs = cellwall_policy::load::read_values("proposal.yaml", &v.yaml)
        .map_err(|e| anyhow::anyhow!("the manager's proposal is not valid YAML: {e}"))?;
    let mut items = Vec::new();
    for (mut item, p) in docs.into_iter().zip(&v.proposal.policies) {
        item["metadata"]["annotations"] = json!({
            "cellwall.io/evidence": serde_json::to_string(&json!({
                "ingress": p.ingress, "egress": p.egress,
            }))?,
        });
        items.push(item);
    }
    Ok(json!({
        "apiVersion": "v1", "kind": "List", "items": items,
        "excluded": v.proposal.excluded,
        "groups": v.proposal.groups,
    }))
}
