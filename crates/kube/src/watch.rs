//! Watching a cluster: one kube-rs watcher per resource of [`crate::RESOURCES`] (list, then
//! watch from the list's resourceVersion with bookmarks; relist after `410 Gone`; backoff on
//! errors, so a CRD installed later is picked up), merged into one stream of [`Change`]s whose
//! objects are already read by the policy crate's loader.

use crate::read::{connect, object_name, KubeError};
use crate::{Resource, RESOURCES};
use cellwall_policy::load::{parse_json, LoadError, Located};
use futures::stream::{self, BoxStream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::path::Path;

/// One object as the loader read it, or why it could not be (the manager cannot enforce it
/// and says so, but keeps watching).
pub type Read = Result<Vec<Located>, LoadError>;

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
    pub changes: BoxStream<'static, Change>,
}

/// Connects with `kubeconfig` (its current context, or `context`) and watches every resource
/// Cellwall reads.
pub async fn watch_cluster(kubeconfig: &Path, context: Option<&str>) -> Result<Watch, KubeError> {
    let (client, context, server) = connect(kubeconfig, context).await?;
    let streams: Vec<_> = RESOURCES
        .iter()
        .map(|r| {
            let ar = ApiResource {
                group: r.group.to_string(),
                version: r.version.to_string(),
                api_version: r.api_version(),
                kind: r.kind.to_string(),
                plural: r.plural.to_string(),
            };
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let ctx = context.clone();
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
                            pending.push(read(&ctx, r, o));
                            None
                        }
                        Ok(Event::InitDone) => Some(Change::Listed {
                            resource: r,
                            objects: std::mem::take(&mut pending),
                        }),
                        Ok(Event::Apply(o)) => Some(Change::Applied {
                            resource: r,
                            object: read(&ctx, r, o),
                        }),
                        Ok(Event::Delete(o)) => Some(Change::Deleted {
                            resource: r,
                            object: read(&ctx, r, o),
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
        context,
        server,
        changes: stream::select_all(streams).boxed(),
    })
}

/// One watched object through the loader, named as [`crate::read_cluster`] names it.
fn read(context: &str, r: &Resource, mut o: DynamicObject) -> Read {
    o.types = Some(TypeMeta {
        api_version: r.api_version(),
        kind: r.kind.to_string(),
    });
    let name = object_name(context, r, &o);
    let text = serde_json::to_string_pretty(&o).expect("an object the API served serialises");
    parse_json(&name, &text).map(|p| p.objects)
}
