//! Test and benchmark support shared by the workspace's tests and benches (a dev-dependency
//! only):
//! - [`bin`] — built binaries of the workspace: locating them ([`bin!`]) and running them;
//! - [`lab`] — labs with unique names, taken down however a test ends; stale labs of killed
//!   runs; listeners for lab benchmarks;
//! - [`conformance`] — the conformance harness (cases in `../shared/conformance`) behind its
//!   [`conformance::Runner`] trait;
//! - [`manager`] — a throwaway `cellwall-manager` on free loopback ports (and, with the `grpc`
//!   feature, mTLS channels to it);
//! - [`proc`] — CPU time and memory of a process from /proc;
//! - [`bench`] — argument parsing, percentiles and goal checks of the benchmarks;
//! - [`kube`] (feature `kube`) — a fake Kubernetes API server holding a world, and the
//!   conformance runner that reads it with `cellwall analyze --kubeconfig`;
//! - [`pods`] (features `lab` and `kube`) — pods started and stopped on a `--source
//!   kubernetes` lab as kubelet and a CNI would, timed until policed and released;
//! - [`fqdn`] — the FQDN lab (a real DNS server, a web server outside the inventory) and a DNS
//!   client, for the FQDN test and benchmark.

pub mod bench;
pub mod bin;
pub mod conformance;
#[cfg(feature = "lab")]
pub mod fqdn;
#[cfg(feature = "kube")]
pub mod kube;
pub mod lab;
pub mod manager;
#[cfg(all(feature = "lab", feature = "kube"))]
pub mod pods;
pub mod proc;
