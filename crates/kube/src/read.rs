//! Reading a live cluster: every resource of [`crate::RESOURCES`] listed in pages through
//! kube-rs, each object handed to the policy crate's loader as the JSON the API served (with the
//! `apiVersion` and `kind` built-in lists leave out), named `CONTEXT:PLURAL/NS/NAME` in errors.

use crate::{Resource, RESOURCES};
use cellwall_policy::load::{parse_json, LoadError, Located};
use kube::api::{Api, DynamicObject, ListParams, TypeMeta};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;

/// Objects per page: large enough that 100,000 pods are 200 requests, small enough that one
/// page never holds the API server's memory long (kubectl uses 500 too).
pub const PAGE: u32 = 500;

/// How often a paged list restarts after its continue token expired (`410 Gone`: the objects
/// changed faster than the pages were read) before giving up.
const LIST_ATTEMPTS: usize = 3;

/// Why a cluster could not be read; each names the kubeconfig, context, server or object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot connect to the cluster of context {context:?}: {source}")]
    Client {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{server}: listing {what} failed: the API server answered {code} {reason}: {message}")]
    Status {
        server: String,
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{server}: listing {what} failed: {source}")]
    List {
        server: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{server}: listing {what}: the continue token expired {LIST_ATTEMPTS} times in a row (the objects change faster than they can be paged); try again")]
    Expired { server: String, what: String },
    #[error(transparent)]
    Parse(#[from] LoadError),
}

/// What one read of a cluster found.
#[derive(Debug)]
pub struct ClusterObjects {
    /// The kubeconfig context read (the current one when none was named).
    pub context: String,
    /// The API server's URL.
    pub server: String,
    pub objects: Vec<Located>,
    /// Objects listed per resource served, in [`RESOURCES`] order.
    pub counts: Vec<(&'static Resource, usize)>,
    /// Resources the API server does not serve (`404`: no such CRD installed). Not an error:
    /// a cluster without AdminNetworkPolicy simply has none.
    pub not_served: Vec<&'static Resource>,
}

/// The kubeconfig and the context it names (`context`, else its current one; empty when it
/// names none).
fn read_kubeconfig(
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<(Kubeconfig, String), KubeError> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|source| KubeError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        source,
    })?;
    let context = context
        .map(str::to_string)
        .or_else(|| kc.current_context.clone())
        .unwrap_or_default();
    Ok((kc, context))
}

/// The name of the context [`connect`] would use, without connecting.
pub fn context_name(kubeconfig: &Path, context: Option<&str>) -> Result<String, KubeError> {
    read_kubeconfig(kubeconfig, context).map(|(_, c)| c)
}

/// A client for `kubeconfig`'s context (its current one unless `context`): (client, context,
/// server URL).
pub(crate) async fn connect(
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<(Client, String, String), KubeError> {
    let path = kubeconfig.display().to_string();
    let (kc, context) = read_kubeconfig(kubeconfig, context)?;
    let options = KubeConfigOptions {
        context: Some(context.clone()).filter(|c| !c.is_empty()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|source| KubeError::Kubeconfig { path, source })?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| KubeError::Client {
        context: context.clone(),
        source,
    })?;
    Ok((client, context, server))
}

/// Connects with `kubeconfig` (its current context, or `context`) and reads every object of
/// every resource Cellwall reads.
pub async fn read_cluster(
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<ClusterObjects, KubeError> {
    let (client, context, server) = connect(kubeconfig, context).await?;
    let mut out = ClusterObjects {
        context,
        server,
        objects: Vec::new(),
        counts: Vec::new(),
        not_served: Vec::new(),
    };
    for r in RESOURCES {
        let Some(items) = list_all(&client, r, &out.server).await? else {
            out.not_served.push(r);
            continue;
        };
        out.counts.push((r, items.len()));
        for mut item in items {
            // Built-in lists leave each item's type out; the loader needs it.
            item.types = Some(TypeMeta {
                api_version: r.api_version(),
                kind: r.kind.to_string(),
            });
            let name = object_name(&out.context, r, &item);
            let text =
                serde_json::to_string_pretty(&item).expect("an object the API served serialises");
            out.objects.extend(parse_json(&name, &text)?.objects);
        }
    }
    Ok(out)
}

/// `CONTEXT:PLURAL/NAMESPACE/NAME` (no namespace for cluster-scoped kinds): what errors and
/// sources call an object read from a cluster.
pub(crate) fn object_name(context: &str, r: &Resource, o: &DynamicObject) -> String {
    let name = o.metadata.name.as_deref().unwrap_or("");
    match o.metadata.namespace.as_deref() {
        Some(ns) if r.namespaced => format!("{context}:{}/{ns}/{name}", r.plural),
        _ => format!("{context}:{}/{name}", r.plural),
    }
}

/// Every object of `r` across namespaces, paged; `None` when the API server does not serve it.
async fn list_all(
    client: &Client,
    r: &Resource,
    server: &str,
) -> Result<Option<Vec<DynamicObject>>, KubeError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.api_resource());
    let what = || r.plural.to_string();
    'attempt: for attempt in 0..LIST_ATTEMPTS {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            match api.list(&lp).await {
                Ok(list) => {
                    items.extend(list.items);
                    match list.metadata.continue_ {
                        Some(t) if !t.is_empty() => token = Some(t),
                        _ => return Ok(Some(items)),
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 && token.is_none() => return Ok(None),
                // The pages must come from one snapshot: start again from the first page.
                Err(kube::Error::Api(s)) if s.code == 410 && token.is_some() => {
                    tracing::info!(
                        resource = r.plural,
                        attempt,
                        "continue token expired; listing again"
                    );
                    continue 'attempt;
                }
                Err(kube::Error::Api(s)) => {
                    return Err(KubeError::Status {
                        server: server.to_string(),
                        what: what(),
                        code: s.code,
                        reason: s.reason.clone(),
                        message: s.message.clone(),
                    })
                }
                Err(source) => {
                    return Err(KubeError::List {
                        server: server.to_string(),
                        what: what(),
                        source,
                    })
                }
            }
        }
    }
    Err(KubeError::Expired {
        server: server.to_string(),
        what: what(),
    })
}
