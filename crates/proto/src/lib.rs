//! The agent <-> manager gRPC contract. Messages and the tonic client/server are generated from
//! `proto/cellwall.proto` at build time; this crate is the only one that knows protobuf: the
//! manager and agent use these types and nothing else of prost.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod generated {
    // prost's output: no docs of ours to add, and clippy's style lints do not apply to it.
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/cellwall.v1.rs"));
}

mod payload;
mod state;

pub use generated::agent_client::AgentClient;
pub use generated::agent_server::{Agent, AgentServer};
pub use generated::bootstrap_client::BootstrapClient;
pub use generated::bootstrap_server::{Bootstrap, BootstrapServer};
pub use generated::*;
pub use payload::{Payload, PayloadError, Reassembly, PART_BYTES};
pub use state::{Keyed, StateDelta, StateDoc};
pub use tonic;

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_policy::synth::scale_scenario;
    use cellwall_policy::{Policy, Workload};
    use std::sync::Arc;

    fn doc(ns: usize) -> StateDoc {
        let (inv, pols) = scale_scenario(ns, 4, 3, 3, 20);
        StateDoc::new(&inv, &pols)
    }

    #[test]
    fn delta_turns_old_into_new_small_and_large() {
        let old = doc(6);
        let mut new = old.clone();
        // Small: one relabel, one removal, one new workload.
        Arc::make_mut(&mut new.workloads[3])
            .labels
            .insert("tier".into(), "changed".into());
        let gone = new.workloads.remove(7);
        let mut added = Workload::clone(&gone);
        added.name = "zz-new".into();
        new.workloads.push(Arc::new(added));
        new.policies.remove(2);
        let policies: Vec<Policy> = new.policies.iter().map(|p| Policy::clone(p)).collect();
        let new = StateDoc::new(&new.inventory(), &policies);
        let d = StateDelta::between(&old, &new);
        assert_eq!(d.workloads.len(), 2);
        assert_eq!(d.removed_workloads, vec![gone.key()]);
        assert_eq!(d.removed_policies.len(), 1);
        let mut got = old.clone();
        got.apply(d.clone());
        assert_eq!(got, new);
        // Through the wire form.
        let m = DesiredState::delta(9, 8, &d, 0);
        match m.payload().unwrap() {
            Payload::Delta {
                base_version: 8,
                delta,
            } => assert_eq!(delta, d),
            p => panic!("{p:?}"),
        }
        // Large (merge path): from nothing to everything and back.
        let d = StateDelta::between(&StateDoc::default(), &new);
        assert!(d.len() > 64);
        let mut got = StateDoc::default();
        got.apply(d);
        assert_eq!(got, new);
        got.apply(StateDelta::between(&new, &old));
        assert_eq!(got, old);
        assert!(StateDelta::between(&old, &old).is_empty());
    }

    /// Found by fuzzing (fuzz/ proto target): deltas of more than 64 changes took a merge path
    /// where the first of two updates of a key won and an update beat a removal of the same
    /// key, the opposite of the path for small deltas. `between` never makes such deltas; a
    /// delta read from the wire may be anything.
    #[test]
    fn apply_is_the_same_whatever_the_delta_size() {
        let old = doc(6);
        let pick = |i: usize| {
            let mut w = Workload::clone(&old.workloads[i]);
            w.labels.insert("v".into(), "first".into());
            w
        };
        let (a, b) = (pick(1), pick(2));
        let mut a2 = a.clone();
        a2.labels.insert("v".into(), "last".into());
        let delta = |pad: usize| {
            let mut removed_workloads = vec![b.key()];
            // Removals of keys nobody holds change nothing but the delta's size.
            removed_workloads.extend(
                (0..pad).map(|i| cellwall_policy::WorkloadKey::new("nowhere", format!("x{i}"))),
            );
            StateDelta {
                workloads: vec![
                    Arc::new(a.clone()),
                    Arc::new(b.clone()),
                    Arc::new(a2.clone()),
                ],
                removed_workloads,
                ..Default::default()
            }
        };
        let (small, large) = (delta(0), delta(100));
        assert!(small.len() <= 64 && large.len() > 64);
        let mut want = old.clone();
        want.apply(small);
        let mut got = old.clone();
        got.apply(large);
        assert_eq!(got, want);
        let find = |d: &StateDoc, k: &cellwall_policy::WorkloadKey| {
            d.workloads.iter().find(|w| w.key() == *k).cloned()
        };
        assert_eq!(find(&got, &a.key()).unwrap().labels["v"], "last");
        assert!(find(&got, &b.key()).is_none());
        assert_eq!(got.workloads.len(), old.workloads.len() - 1);
    }

    #[test]
    fn big_snapshots_are_deflated_and_round_trip() {
        let d = doc(40);
        let m = DesiredState::snapshot(5, &d, 0);
        assert!(m.deflate);
        assert!(m.state_json.len() * 4 < d.to_json().len());
        match m.payload().unwrap() {
            Payload::Snapshot(got) => assert_eq!(got, d),
            p => panic!("{p:?}"),
        }
    }

    /// A snapshot sent in parts shares its bytes and comes back whole, however it is cut; a
    /// whole message passes through untouched.
    #[test]
    fn parts_reassemble_into_the_message() {
        let d = doc(40);
        let m = DesiredState::snapshot(5, &d, 7);
        for part in [1000, PART_BYTES, m.state_json.len(), m.state_json.len() + 1] {
            let parts = m.parts(part);
            assert_eq!(parts.len(), m.state_json.len().div_ceil(part));
            assert!(parts[..parts.len() - 1].iter().all(|p| p.more));
            assert!(!parts.last().unwrap().more);
            // Zero copy: each part points into the snapshot's buffer.
            assert!(parts
                .iter()
                .all(|p| m.state_json.as_ptr_range().contains(&p.state_json.as_ptr())));
            let mut r = Reassembly::new(usize::MAX);
            let mut whole = None;
            for (i, p) in parts.into_iter().enumerate() {
                let got = r.push(p).unwrap();
                assert_eq!(got.is_some(), i + 1 == m.state_json.len().div_ceil(part));
                whole = whole.or(got);
            }
            assert_eq!(whole.unwrap(), m);
        }
    }

    /// Parts of another version, or past the limit, are refused (and the next message starts
    /// clean).
    #[test]
    fn parts_that_do_not_continue_or_grow_too_large_are_refused() {
        let m = DesiredState::snapshot(5, &doc(40), 0);
        let other = DesiredState::snapshot(6, &doc(40), 0);
        let mut r = Reassembly::new(usize::MAX);
        assert!(r.push(m.parts(1000)[0].clone()).unwrap().is_none());
        let e = r.push(other.parts(1000)[1].clone()).unwrap_err();
        assert!(e.to_string().contains("version 6"), "{e}");
        let parts = m.parts(1000);
        let mut r = Reassembly::new(2500);
        assert!(r.push(parts[0].clone()).unwrap().is_none());
        assert!(r.push(parts[1].clone()).unwrap().is_none());
        assert!(matches!(
            r.push(parts[2].clone()),
            Err(PayloadError::PartsTooLarge { limit: 2500 })
        ));
        let small = DesiredState::delta(7, 6, &StateDelta::default(), 0);
        assert_eq!(r.push(small.clone()).unwrap(), Some(small));
    }
}
