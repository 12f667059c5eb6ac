//! A fake Kubernetes API server for tests and the lab: no real one can run where Cellwall is
//! tested. It speaks the wire protocol kube-rs and kubectl speak, with the behaviour readers
//! must survive:
//! - lists in pages (`limit`, opaque `continue` tokens) from one snapshot; built-in kinds' items
//!   without `apiVersion`/`kind`, custom kinds' with them; `resourceVersion` on the list;
//! - watches as a chunked stream of JSON lines from a `resourceVersion`, with `BOOKMARK`s when
//!   asked, ended after `timeoutSeconds`;
//! - history kept like etcd's (every version until [`FakeApi::compact`]): a watch or a
//!   continue token older than the compaction gets `410 Gone`/`Expired`, as the real one does;
//! - bearer-token authentication, `404` with a `Status` for resources it does not serve (a
//!   cluster without a CRD), server-set metadata (uid, resourceVersion, generation,
//!   creationTimestamp, managedFields).
//!
//! It runs on its own thread and runtime, so synchronous tests and the lab drive it directly.

mod http;

use crate::{Resource, RESOURCES};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

/// What the fake serves: the resources Cellwall reads, and core/v1 Events (which the manager
/// writes about objects it refuses).
pub(crate) fn table() -> &'static [Resource] {
    static TABLE: std::sync::LazyLock<Vec<Resource>> = std::sync::LazyLock::new(|| {
        let mut t = RESOURCES.to_vec();
        t.push(Resource {
            group: "",
            version: "v1",
            kind: "Event",
            plural: "events",
            namespaced: true,
            custom: false,
        });
        t
    });
    &TABLE
}

/// The bearer token the fake accepts (written into its kubeconfigs).
pub const TOKEN: &str = "cellwall-fake-api-token";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    res: usize,
    ns: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Arc<Value>,
}

/// Requests served, for tests that check how a client behaved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// List requests (every page counts).
    pub lists: u64,
    pub watches: u64,
    /// Requests answered `410 Gone` (expired continue tokens and watches).
    pub gone: u64,
}

/// An object's versions, oldest first, each with the resourceVersion that wrote it.
type Versions = Vec<(u64, Option<Arc<Value>>)>;

struct Inner {
    rv: u64,
    /// Every version of every object since the last compaction (`None`: deleted), like etcd.
    store: BTreeMap<Key, Versions>,
    /// Events after `compacted`, in order: what a watch from an older version replays.
    log: Vec<Event>,
    compacted: u64,
    served: Vec<bool>,
    bookmark_every: Duration,
    expire_continues: u32,
    /// Open watches get no live events (a stalled connection), until [`FakeApi::heal`].
    partitioned: bool,
    next_uid: u64,
    stats: Stats,
    /// ServiceAccount tokens issued by [`FakeApi::issue_token`], for TokenReviews.
    tokens: HashMap<String, IssuedToken>,
}

/// Who a fake ServiceAccount token belongs to (what the real API server reads from the JWT).
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub username: String,
    pub audiences: Vec<String>,
    pub node: Option<String>,
    pub pod: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch (an API server restarting).
    kick: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or replaces an object: (its new resourceVersion, whether it was created).
    fn apply(&self, manifest: &Value) -> Result<(u64, bool), String> {
        let (r, key) = key_of(manifest)?;
        let mut inner = self.lock();
        if !inner.served[r] {
            return Err(format!("{} is not served", table()[r].plural));
        }
        let prev = latest(&inner, &key).cloned();
        inner.rv += 1;
        let rv = inner.rv;
        let mut obj = manifest.clone();
        let meta = obj
            .as_object_mut()
            .ok_or("a manifest must be an object")?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let (uid, created, generation) = match &prev {
            Some(p) => {
                let m = &p["metadata"];
                let same_spec = p.get("spec") == manifest.get("spec");
                let g = m["generation"].as_u64().unwrap_or(1);
                (
                    m["uid"].clone(),
                    m["creationTimestamp"].clone(),
                    if same_spec { g } else { g + 1 },
                )
            }
            None => {
                let uid = format!("00000000-0000-4000-8000-{:012x}", inner.next_uid);
                inner.next_uid += 1;
                (json!(uid), json!(now()), 1)
            }
        };
        meta["name"] = json!(key.name);
        if table()[r].namespaced {
            meta["namespace"] = json!(key.ns);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = uid;
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(generation);
        meta["creationTimestamp"] = created;
        meta["managedFields"] = json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": table()[r].api_version(),
            "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}, "f:spec": {}}
        }]);
        // With a status subresource, writes of the object leave its status as it was.
        if crate::crd::has_status(&table()[r]) {
            match prev.as_ref().and_then(|p| p.get("status")) {
                Some(st) => obj["status"] = st.clone(),
                None => {
                    if let Some(o) = obj.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        let created = prev.is_none();
        record(&mut inner, self, key, kind, Arc::new(obj));
        Ok((rv, created))
    }

    /// Deletes an object: its last state, or none when there was none.
    fn delete(&self, key: &Key) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        let prev = latest(&inner, key).cloned()?;
        inner.rv += 1;
        let mut gone = (*prev).clone();
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let gone = Arc::new(gone);
        record(&mut inner, self, key.clone(), "DELETED", gone.clone());
        Some(gone)
    }

    /// Merges `status` into an object's status (a new resourceVersion; spec and generation
    /// unchanged): none when the object does not exist.
    fn patch_status(&self, key: &Key, status: &Value) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        let prev = latest(&inner, key).cloned()?;
        inner.rv += 1;
        let mut obj = (*prev).clone();
        merge_patch(&mut obj["status"], status);
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let obj = Arc::new(obj);
        record(&mut inner, self, key.clone(), "MODIFIED", obj.clone());
        Some(obj)
    }

    /// A TokenReview's answer, as the API server gives it: authenticated only for a token it
    /// issued, still valid, and meant for one of the audiences asked (all of them when none).
    pub(crate) fn review(&self, token: &str, audiences: &[String]) -> Value {
        let inner = self.lock();
        let Some(t) = inner.tokens.get(token) else {
            return json!({"authenticated": false, "error": "[invalid bearer token, token lookup failed]"});
        };
        let ok: Vec<&String> = if audiences.is_empty() {
            t.audiences.iter().collect()
        } else {
            audiences
                .iter()
                .filter(|a| t.audiences.contains(a))
                .collect()
        };
        if ok.is_empty() {
            return json!({"authenticated": false,
                "error": "[invalid bearer token, token audiences is invalid for the target audiences]"});
        }
        let mut extra = serde_json::Map::new();
        if let Some(n) = &t.node {
            extra.insert(crate::review::NODE_NAME.into(), json!([n]));
        }
        if let Some(p) = &t.pod {
            extra.insert(crate::review::POD_NAME.into(), json!([p]));
        }
        json!({"authenticated": true, "audiences": ok,
            "user": {"username": t.username, "uid": "fake-uid",
                     "groups": ["system:serviceaccounts", "system:authenticated"], "extra": extra}})
    }

    /// The current state of an object.
    fn get(&self, key: &Key) -> Option<Arc<Value>> {
        latest(&self.lock(), key).cloned()
    }
}

/// A running fake API server; stopped when dropped.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a fake API server on a free loopback port, serving every resource Cellwall reads.
    pub fn start() -> std::io::Result<FakeApi> {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1,
                store: BTreeMap::new(),
                log: Vec::new(),
                compacted: 0,
                served: vec![true; table().len()],
                bookmark_every: Duration::from_secs(1),
                expire_continues: 0,
                partitioned: false,
                next_uid: 1,
                stats: Stats::default(),
                tokens: HashMap::new(),
            }),
            events,
            kick: tokio::sync::watch::channel(0).0,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("fake API server: {e}");
                            return;
                        }
                    };
                    // Open watches would hold a graceful shutdown for minutes: stop at once.
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                tracing::error!("fake API server: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(FakeApi {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose only context, `context`, reaches this server with its token.
    pub fn kubeconfig(&self, context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
contexts:\n- name: {context}\n  context:\n    cluster: fake\n    user: fake\n\
current-context: {context}\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n",
            self.url()
        )
    }

    /// Creates or replaces an object (given as a manifest: `apiVersion`, `kind`, `metadata`,
    /// the rest kept as is) and returns its new resourceVersion. Namespaced objects without a
    /// namespace go to `default`, as `kubectl apply` does.
    pub fn apply(&self, manifest: &Value) -> Result<u64, String> {
        self.shared.apply(manifest).map(|(rv, _)| rv)
    }

    /// Deletes an object; false when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let manifest = json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}
        });
        key_of(&manifest).is_ok_and(|(_, key)| self.shared.delete(&key).is_some())
    }

    /// Makes the server hold exactly `manifests` (of the kinds it serves): applies what is new
    /// or changed, deletes the rest, as a controller reconciling would. Returns the changes.
    pub fn sync(&self, manifests: &[Value]) -> Result<usize, String> {
        let mut want = BTreeMap::new();
        for m in manifests {
            let (_, key) = key_of(m)?;
            want.insert(key, m);
        }
        let mut changes = 0;
        let present: Vec<(Key, Arc<Value>)> = {
            let inner = self.shared.lock();
            inner
                .store
                .keys()
                .filter_map(|k| latest(&inner, k).map(|v| (k.clone(), v.clone())))
                .collect()
        };
        for (key, obj) in &present {
            match want.get(key) {
                Some(m) if same_content(obj, m) => {
                    want.remove(key);
                }
                Some(_) => {}
                None => {
                    let r = &table()[key.res];
                    self.delete(&r.api_version(), r.kind, &key.ns, &key.name);
                    changes += 1;
                }
            }
        }
        for m in want.values() {
            self.apply(m)?;
            changes += 1;
        }
        Ok(changes)
    }

    /// Forgets history: later watches from an older resourceVersion, and continue tokens
    /// issued before, get `410 Gone` (what etcd's compaction does to clients).
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        let rv = inner.rv;
        inner.compacted = rv;
        inner.log.clear();
        for versions in inner.store.values_mut() {
            let last = versions.pop();
            versions.clear();
            versions.extend(last.filter(|(_, v)| v.is_some()));
        }
        inner.store.retain(|_, v| !v.is_empty());
    }

    /// Open watches stop receiving events (they stay connected): what a client sees when its
    /// connection stalls or the API server falls behind.
    pub fn partition(&self) {
        self.shared.lock().partitioned = true;
    }

    /// Ends the partition as a restarted API server would: history compacted, every open
    /// watch closed. Clients must watch again; from the version they last saw they get
    /// `410 Gone` and must list again to learn what they missed.
    pub fn heal(&self) {
        self.compact();
        self.shared.lock().partitioned = false;
        self.shared.kick.send_modify(|g| *g += 1);
    }

    /// The next `n` continue tokens presented get `410 Gone`, as when the objects changed
    /// faster than a client paged through them.
    pub fn expire_next_continues(&self, n: u32) {
        self.shared.lock().expire_continues = n;
    }

    /// Serves (or, false, stops serving: `404`) a resource, as installing or removing its CRD.
    pub fn serve(&self, api_version: &str, kind: &str, served: bool) {
        if let Some(i) = table()
            .iter()
            .position(|r| r.kind == kind && r.api_version() == api_version)
        {
            self.shared.lock().served[i] = served;
        }
    }

    /// How often open watches that asked for bookmarks get one (default 1 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.lock().bookmark_every = every;
    }

    /// Every current object of a kind (e.g. the Events a client wrote).
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(res) = table()
            .iter()
            .position(|r| r.kind == kind && r.api_version() == api_version)
        else {
            return Vec::new();
        };
        let inner = self.shared.lock();
        inner
            .store
            .iter()
            .filter(|(k, _)| k.res == res)
            .filter_map(|(_, v)| v.last()?.1.as_ref().map(|o| (**o).clone()))
            .collect()
    }

    /// Issues a ServiceAccount token, as kubelet asks for a pod's projected token: for
    /// `namespace/service_account`, valid for `audience`, bound to `pod` on `node` when given
    /// (the claims Kubernetes 1.30+ puts in pod-bound tokens).
    pub fn issue_token(
        &self,
        namespace: &str,
        service_account: &str,
        node: Option<&str>,
        pod: Option<&str>,
        audience: &str,
    ) -> String {
        let mut inner = self.shared.lock();
        inner.next_uid += 1;
        let token = format!(
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UifQ.{:016x}{:08x}.c2ln",
            inner.next_uid,
            std::process::id()
        );
        inner.tokens.insert(
            token.clone(),
            IssuedToken {
                username: format!("system:serviceaccount:{namespace}:{service_account}"),
                audiences: vec![audience.to_string()],
                node: node.map(str::to_string),
                pod: pod.map(str::to_string),
            },
        );
        token
    }

    /// Ends a token's validity (it expired, or its pod was deleted).
    pub fn invalidate_token(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The resource index and key of a manifest.
fn key_of(m: &Value) -> Result<(usize, Key), String> {
    let api = m["apiVersion"].as_str().unwrap_or_default();
    let kind = m["kind"].as_str().unwrap_or_default();
    let res = table()
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api)
        .ok_or_else(|| format!("the fake API server does not serve {api} {kind}"))?;
    let r = &table()[res];
    let name = m["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is required")?
        .to_string();
    let ns = if r.namespaced {
        m["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    Ok((res, Key { res, ns, name }))
}

/// Equal but for what the API server sets (uid, versions, timestamps, managed fields, the
/// namespace it defaults): whether writing `manifest` over `stored` would change anything.
pub fn same_content(stored: &Value, manifest: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "namespace",
            ] {
                m.remove(k);
            }
        }
        // A status the manager wrote (status subresource) is not the manifest's to change.
        let api = v["apiVersion"].as_str().unwrap_or_default();
        let kind = v["kind"].as_str().unwrap_or_default();
        if crate::resource_of(api, kind).is_some_and(crate::crd::has_status) {
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
        }
        v
    };
    strip(stored) == strip(manifest)
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns is valid");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("UTC formats")
}

fn latest<'a>(inner: &'a Inner, key: &Key) -> Option<&'a Arc<Value>> {
    inner.store.get(key)?.last()?.1.as_ref()
}

fn at(versions: &Versions, rv: u64) -> Option<&Arc<Value>> {
    versions.iter().rev().find(|(v, _)| *v <= rv)?.1.as_ref()
}

fn record(inner: &mut Inner, shared: &Shared, key: Key, kind: &'static str, object: Arc<Value>) {
    let rv = inner.rv;
    let stored = (kind != "DELETED").then(|| object.clone());
    inner
        .store
        .entry(key.clone())
        .or_default()
        .push((rv, stored));
    let ev = Event {
        rv,
        key,
        kind,
        object,
    };
    inner.log.push(ev.clone());
    // No receiver is fine: nobody watches.
    let _ = shared.events.send(ev);
}
