//! The held-DNS side of the kernel datapath (bpf/lib/dns.h): the `cw_dns` ring, releasing
//! answers, and the connections that keep learned names alive.

use super::{err, KernelDatapath};
use crate::abi::*;
use crate::{netns, DatapathError};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use std::os::fd::AsFd;

impl KernelDatapath {
    /// One of `cw_dns_counters`, summed over CPUs.
    pub(super) fn dns_counter(&self, idx: u32) -> Result<u64, DatapathError> {
        let m: aya::maps::PerCpuArray<&MapData, u64> =
            aya::maps::PerCpuArray::try_from(self.map("cw_dns_counters")?)
                .map_err(|e| err("cw_dns_counters", e))?;
        Ok(m.get(&idx, 0)
            .map_err(|e| err("reading cw_dns_counters", e))?
            .iter()
            .sum())
    }

    fn dns_ring(&mut self) -> Result<&mut RingBuf<MapData>, DatapathError> {
        if self.dns.is_none() {
            let m = self
                .ebpf
                .take_map("cw_dns")
                .ok_or_else(|| err("map", "cw_dns"))?;
            self.dns = Some(RingBuf::try_from(m).map_err(|e| err("cw_dns", e))?);
        }
        Ok(self.dns.as_mut().expect("just set"))
    }

    /// Takes up to `max` held DNS answers, oldest first, without blocking.
    pub fn take_dns(&mut self, max: usize) -> Result<Vec<crate::HeldDns>, DatapathError> {
        let rb = self.dns_ring()?;
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = rb.next() else { break };
            if item.len() < 8 {
                continue;
            }
            let ifindex = u32::from_ne_bytes(item[0..4].try_into().expect("4 bytes"));
            let len = u32::from_ne_bytes(item[4..8].try_into().expect("4 bytes")) as usize;
            let end = (8 + len).min(item.len());
            out.push(crate::HeldDns {
                ifindex,
                frame: item[8..end].to_vec(),
            });
        }
        Ok(out)
    }

    /// Sends a held answer on, marked so the program lets it pass.
    pub fn release_dns(&mut self, held: &crate::HeldDns) -> Result<(), DatapathError> {
        if self.releaser.is_none() {
            let ns = self.netns.clone();
            self.releaser = Some(netns::within(ns.as_deref(), crate::dns::Releaser::open)?);
        }
        self.releaser
            .as_ref()
            .expect("just set")
            .send(held)
            .map_err(|e| {
                err(
                    format!("releasing a DNS answer on interface {}", held.ifindex),
                    e,
                )
            })
    }

    /// Peer addresses of tracked connections (`cw_conntrack`) and admitted pairs
    /// (`cw_admitted`, TCP connections admitted without an entry).
    pub fn tracked_peers(
        &self,
    ) -> Result<std::collections::HashSet<std::net::IpAddr>, DatapathError> {
        let ip = |a: [u8; 16]| {
            let v6 = std::net::Ipv6Addr::from(a);
            v6.to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(std::net::IpAddr::V6(v6))
        };
        let mut out = std::collections::HashSet::new();
        let ct: BpfHashMap<&MapData, CtKey, CtVal> =
            BpfHashMap::try_from(self.map("cw_conntrack")?).map_err(|e| err("cw_conntrack", e))?;
        for k in ct.keys() {
            let k = k.map_err(|e| err("reading cw_conntrack", e))?;
            out.insert(ip(if k.dir == DIR_EGRESS {
                k.daddr
            } else {
                k.saddr
            }));
        }
        let adm: BpfHashMap<&MapData, AdmitKey, AdmitVal> =
            BpfHashMap::try_from(self.map("cw_admitted")?).map_err(|e| err("cw_admitted", e))?;
        for k in adm.keys() {
            out.insert(ip(k.map_err(|e| err("reading cw_admitted", e))?.addr));
        }
        Ok(out)
    }

    /// A descriptor another thread can sleep on until answers are held.
    pub fn dns_waker(&mut self) -> Result<crate::DnsWaker, DatapathError> {
        let fd = self
            .dns_ring()?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| err("duplicating the cw_dns descriptor", e))?;
        Ok(crate::DnsWaker(fd))
    }
}
