//! Pods started and stopped on a running `--source kubernetes` lab the way kubelet and a CNI
//! would ([`cellwall_lab::cni_add`], then the Pod written to the lab's API server), timed until
//! the agent polices them and until it lets them go. The lab's agent finds interfaces itself,
//! so this is the DaemonSet agent's path end to end. Shared by the root test and the latency
//! benchmark.

use crate::lab::{listen, Lab};
use cellwall_lab::netns;
use cellwall_policy::Protocol;
use serde_json::json;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab the pods join: `client` may reach `app: db` on 5432, `other` may not.
pub const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: l}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: l, labels: {app: client}}
spec: {containers: [{ports: [{containerPort: 9}]}]}
status: {podIP: 10.83.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: l, labels: {app: other}}
spec: {containers: [{ports: [{containerPort: 9}]}]}
status: {podIP: 10.83.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-in, namespace: l}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 5432}]
";

/// How long each pod took, in ms.
#[derive(Debug, Default)]
pub struct PodTimes {
    /// From the Pod's write to the API (its veth already up, as the CNI runs first) until a
    /// connection the policy denies is dropped.
    pub policed: Vec<f64>,
    /// From CNI DEL (the veth deleted, ~0.2 s in the kernel, then the namespace) until the
    /// pod's programs are detached.
    pub released: Vec<f64>,
}

/// A TCP server on 5432 inside a pod's namespace, until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &str) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, is_ready) = std::sync::mpsc::channel();
        let (ns, s) = (ns.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            netns::enter(&ns).expect("enter the pod's namespace");
            let l = listen(5432).expect("listen on 5432");
            l.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        is_ready.recv().expect("the server started");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lab's Kubernetes API server, written to as kubelet and kubectl would.
pub struct Api {
    url: String,
    auth: String,
    http: ureq::Agent,
}

impl Api {
    /// The API server of `--source kubernetes` lab `lab`.
    pub fn of(lab: &str) -> Api {
        let url = std::fs::read_to_string(cellwall_lab::state_dir(lab).join("kube-api.url"))
            .expect("the lab's API server address");
        Api {
            url,
            auth: format!("Bearer {}", crate::kube::TOKEN),
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
        }
    }

    /// Writes a running Pod `l/NAME` with label `app`, on the lab's node, at `ip`, serving
    /// 5432.
    pub fn create_pod(&self, name: &str, app: &str, ip: IpAddr) {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "l", "labels": {"app": app}},
            "spec": {"nodeName": cellwall_lab::LAB_NODE,
                     "containers": [{"name": "c", "ports": [{"containerPort": 5432}]}]},
            "status": {"phase": "Running", "podIP": ip.to_string(),
                       "podIPs": [{"ip": ip.to_string()}]},
        });
        self.http
            .post(&format!("{}/api/v1/namespaces/l/pods", self.url))
            .set("Authorization", &self.auth)
            .send_json(&obj)
            .expect("write the pod to the API");
    }

    pub fn delete_pod(&self, name: &str) {
        self.http
            .delete(&format!("{}/api/v1/namespaces/l/pods/{name}", self.url))
            .set("Authorization", &self.auth)
            .call()
            .expect("delete the pod from the API");
    }
}

/// Whether `to`:5432 becomes reachable from `from_ns` within `within` (tries every 200 ms).
pub fn reachable(from_ns: &str, to: IpAddr, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if connects(from_ns, to, Duration::from_millis(200)) {
            return true;
        }
    }
    false
}

/// Whether a TCP connection from namespace `from_ns` to `to`:5432 gets through in `timeout`.
pub fn connects(from_ns: &str, to: IpAddr, timeout: Duration) -> bool {
    netns::run_in(from_ns, move || {
        cellwall_lab::connect(Protocol::Tcp, to, 5432, timeout)
    })
    .expect("run in the pod's namespace")
}

/// Starts and stops `n` pods labelled `app: db` on `lab` (up with [`MANIFESTS`] and
/// `--source kubernetes`), one at a time, checking at each step that the policy holds on real
/// connections. Panics when a pod is not policed or released within 10 s.
pub fn start_and_stop(lab: &Lab, n: usize) -> PodTimes {
    let api = Api::of(&lab.name);
    let (client, other) = (lab.pod("client").netns, lab.pod("other").netns);
    let links = cellwall_lab::pin_dir(&lab.name).join("links");
    let mut times = PodTimes::default();
    for k in 0..n {
        let ip: IpAddr = format!("10.83.1.{}", 10 + k).parse().unwrap();
        let name = format!("db-{k}");
        let pod = cellwall_lab::cni_add(&lab.name, k, &[ip]).expect("CNI add");
        let server = Server::start(&pod.netns);
        // A new bridge port forwards once the kernel's link watcher has seen its carrier, which
        // it batches (up to 1 s here): wait for the pod to be reachable, as kubelet's readiness
        // would, before the Pod is written.
        assert!(
            reachable(&other, ip, Duration::from_secs(5)),
            "{name}: reachable before Cellwall knows it (the starting point measured)"
        );
        let t0 = Instant::now();
        api.create_pod(&name, "db", ip);
        loop {
            // The probe's start bounds when the policy was in force (its SYN leaves at once).
            let at = t0.elapsed();
            if !connects(&other, ip, Duration::from_millis(50)) {
                times.policed.push(at.as_secs_f64() * 1000.0);
                break;
            }
            assert!(at < Duration::from_secs(10), "{name} not policed in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            connects(&client, ip, Duration::from_secs(1)),
            "{name}: the client the policy admits is refused"
        );
        let pin = links.join(format!("{}_from_pod", pod.host_if));
        assert!(pin.exists(), "{name}: programs attached to {}", pod.host_if);

        drop(server);
        let t1 = Instant::now();
        cellwall_lab::cni_del(&lab.name, k).expect("CNI del");
        while pin.exists() {
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "{name} not released in 10 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        times.released.push(t1.elapsed().as_secs_f64() * 1000.0);
        api.delete_pod(&name);
    }
    times
}

/// Whether a TCP connection from namespace `from_ns`, with source address `src` (which must be
/// on one of its interfaces), to `to`:5432 gets through in `timeout`: a pod posing as another.
pub fn connects_as(from_ns: &str, src: IpAddr, to: IpAddr, timeout: Duration) -> bool {
    use socket2::{Domain, Socket, Type};
    netns::run_in(from_ns, move || {
        let s = Socket::new(
            Domain::for_address(std::net::SocketAddr::new(to, 0)),
            Type::STREAM,
            None,
        )?;
        s.bind(&std::net::SocketAddr::new(src, 0).into())?;
        Ok::<bool, std::io::Error>(
            s.connect_timeout(&std::net::SocketAddr::new(to, 5432).into(), timeout)
                .is_ok(),
        )
    })
    .expect("run in the pod's namespace")
    .expect("bind the posing address")
}
