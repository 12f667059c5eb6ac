//! Watching a cluster: one kube-rs watcher per resource of [`crate::RESOURCES`] (list, then
//! watch from the list's resourceVersion with bookmarks; relist after `410 Gone`; backoff on
//! errors, so a CRD installed later is picked up), merged into one stream of [`Change`]s whose
//! objects are already read by the policy crate's loader.

use crate::read::{connect, object_name, KubeError};
use crate::{Resource, RESOURCES};
use cellwall_policy::load::{parse_json, LoadError, Located};
use futures::stream::{self, BoxStream, StreamExt};
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::path::Path;

/// One object as the loader read it, or why it could not be (the manager cannot enforce it
/// and says so, but keeps watching).
#[derive(Debug)]
pub struct Read {
    pub object: ObjectRef,
    pub result: Result<Vec<Located>, LoadError>,
}

/// Which object a [`Read`] is, as an Event's `involvedObject` names it.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `metadata.generation`: bumped by the API server on spec changes only (a status write
    /// does not), so it names what a status was computed from.
    pub generation: Option<i64>,
}

/// What changed in a cluster.
#[derive(Debug)]
pub enum Change {
    /// A (re)list of `resource` completed: these are all its objects now; any other object of
    /// this resource that came from this cluster is gone.
    Listed {
        resource: &'static Resource,
        objects: Vec<Read>,
    },
    /// An object was created or changed.
    Applied {
        resource: &'static Resource,
        object: Read,
    },
    /// An object was deleted (its last state).
    Deleted {
        resource: &'static Resource,
        object: Read,
    },
    /// The watch of `resource` failed (it retries with backoff): the API server is down, the
    /// resource is not served, or access is denied.
    Failed {
        resource: &'static Resource,
        error: String,
    },
}

/// A connected cluster's changes, forever (each resource's watcher retries on its own).
pub struct Watch {
    pub context: String,
    pub server: String,
    /// The cluster's client, for writing back (Events).
    pub client: kube::Client,
    pub changes: BoxStream<'static, Change>,
}

/// Connects with `kubeconfig` (its current context, or `context`) and watches every resource
/// Cellwall reads. With a `cluster` name, every object read is qualified with it
/// ([`cellwall_policy::clusters`]): the manager watches several clusters.
pub async fn watch_cluster(
    kubeconfig: &Path,
    context: Option<&str>,
    cluster: Option<&str>,
) -> Result<Watch, KubeError> {
    let (client, context, server) = connect(kubeconfig, context).await?;
    let cluster: Option<std::sync::Arc<str>> = cluster.map(Into::into);
    let streams: Vec<_> = RESOURCES
        .iter()
        .map(|r| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.api_resource());
            let ctx = context.clone();
            let cluster = cluster.clone();
            let mut pending: Vec<Read> = Vec::new();
            watcher::watcher(api, watcher::Config::default().page_size(crate::read::PAGE))
                .default_backoff()
                .filter_map(move |ev| {
                    let out = match ev {
                        Ok(Event::Init) => {
                            pending.clear();
                            None
                        }
                        Ok(Event::InitApply(o)) => {
                            pending.push(read(&ctx, cluster.as_deref(), r, o));
                            None
                        }
                        Ok(Event::InitDone) => Some(Change::Listed {
                            resource: r,
                            objects: std::mem::take(&mut pending),
                        }),
                        Ok(Event::Apply(o)) => Some(Change::Applied {
                            resource: r,
                            object: read(&ctx, cluster.as_deref(), r, o),
                        }),
                        Ok(Event::Delete(o)) => Some(Change::Deleted {
                            resource: r,
                            object: read(&ctx, cluster.as_deref(), r, o),
                        }),
                        Err(e) => Some(Change::Failed {
                            resource: r,
                            error: e.to_string(),
                        }),
                    };
                    futures::future::ready(out)
                })
                .boxed()
        })
        .collect();
    Ok(Watch {
        client,
        context,
        server,
        changes: stream::select_all(streams).boxed(),
    })
}

/// One watched object through the loader, named as [`crate::read_cluster`] names it, and
/// qualified with its `cluster`'s name if it has one.
fn read(context: &str, cluster: Option<&str>, r: &Resource, mut o: DynamicObject) -> Read {
    o.types = Some(TypeMeta {
        api_version: r.api_version(),
        kind: r.kind.to_string(),
    });
    let name = object_name(context, r, &o);
    let text = serde_json::to_string_pretty(&o).expect("an object the API served serialises");
    Read {
        object: ObjectRef {
            api_version: r.api_version(),
            kind: r.kind.to_string(),
            namespace: o.metadata.namespace.clone().filter(|_| r.namespaced),
            name: o.metadata.name.clone().unwrap_or_default(),
            uid: o.metadata.uid.clone(),
            resource_version: o.metadata.resource_version.clone(),
            generation: o.metadata.generation,
        },
        result: parse_json(&name, &text).map(|p| match cluster {
            Some(c) => p
                .objects
                .into_iter()
                .map(|o| Located {
                    object: o.object.qualified(c),
                    source: o.source,
                })
                .collect(),
            None => p.objects,
        }),
    }
}

/// Writes a Warning Event about `object` (`kubectl describe` and `kubectl get events` show
/// it): Cellwall does not enforce it, and why. Cluster-scoped objects' Events go to `default`.
pub async fn report_refused(
    client: &kube::Client,
    object: &ObjectRef,
    message: &str,
) -> Result<(), kube::Error> {
    let message = format!("Cellwall does not enforce this object: {message}");
    report_warning(client, object, "Refused", &message).await
}

/// Writes a Warning Event about `object` with `reason` (CamelCase) and `message`.
pub async fn report_warning(
    client: &kube::Client,
    object: &ObjectRef,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
    let stamp = now_rfc3339();
    let event: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", object.name), "namespace": ns},
        "involvedObject": {
            "apiVersion": object.api_version, "kind": object.kind, "name": object.name,
            "namespace": object.namespace, "uid": object.uid,
            "resourceVersion": object.resource_version,
        },
        "type": "Warning", "reason": reason,
        "message": message,
        "source": {"component": "cellwall-manager"},
        "reportingComponent": "cellwall-manager",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }))
    .expect("a valid Event");
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("", "v1", "Event"),
        "events",
    );
    Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
        .create(&kube::api::PostParams::default(), &event)
        .await
        .map(|_| ())
}

/// Replaces `object`'s status (a JSON merge patch of the status subresource; the API server
/// leaves its spec and generation alone). Only kinds whose CRD has the subresource
/// ([`crate::crd::has_status`]).
pub async fn write_status(
    client: &kube::Client,
    resource: &Resource,
    object: &ObjectRef,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let ar = resource.api_resource();
    let api: Api<DynamicObject> = match &object.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &object.name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Now, to the second, as the API writes times (`2026-12-07T10:00:00Z`).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(now as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
