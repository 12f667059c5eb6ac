//! Rust mirrors of `bpf/abi.h`, checked against the C layout at compile time (the constants come
//! from build.rs, which compiles and runs bpf/abi_layout.c).

#![allow(dead_code)]

use std::mem::{offset_of, size_of};

#[allow(non_upper_case_globals)]
mod c {
    include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));
}

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const CFG_SLOT: u32 = c::CFG_SLOT;
pub const CFG_EPOCH: u32 = c::CFG_EPOCH;
pub const CFG_FLAGS: u32 = c::CFG_FLAGS;
pub const F_VISIBILITY_OFF: u32 = c::F_VISIBILITY_OFF;
pub const EP_HAS_INGRESS_POLICY: u32 = 1;
pub const EP_HAS_EGRESS_POLICY: u32 = 2;
pub const EP_LEARNS_NAMES: u32 = 4;
pub const DNS_MAX: usize = c::DNS_MAX;
pub const DNS_RELEASE_MARK: u32 = c::DNS_RELEASE_MARK;
/// Indexes of `cw_dns_counters` (abi.h `CW_DNS_CNT_*`).
pub const DNS_CNT_HELD: u32 = 0;
pub const DNS_CNT_LOST: u32 = 1;
pub const DNS_CNT_UNSOLICITED: u32 = 2;
pub const POLICY_FIXED_BITS: u32 = c::POLICY_FIXED_BITS;
pub const CNT_MAX: u32 = c::CNT_MAX;

pub const EV_ALLOW: u8 = 1;
pub const EV_DENY: u8 = 2;
pub const EV_AUDIT: u8 = 3;
pub const EV_REVOKE: u8 = 4;

/// ipcache key data (aya's `lpm_trie::Key` supplies the leading `prefixlen`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpcacheKeyData {
    pub slot: u32,
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpcacheVal {
    pub identity: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointVal {
    pub ep_id: u32,
    pub ifindex: u32,
    pub flags: [u32; 2],
}

/// Policy key data after `prefixlen`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyKeyData {
    pub slot: u32,
    pub ep_id: u32,
    pub peer: u32,
    pub dir: u8,
    pub proto: u8,
    /// Big-endian.
    pub port: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyVal {
    pub allow: u8,
    pub audit_allow: u8,
    pub pad: u16,
    pub rule: u32,
    pub audit_rule: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub ep_id: u32,
    pub proto: u8,
    pub dir: u8,
    pub pad: [u8; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtVal {
    pub created_ns: u64,
    pub packets: u64,
    pub epoch: u32,
    pub rule: u32,
    pub flags: u32,
    pub pad: u32,
}

/// A pair admitted without a conntrack entry (bpf/abi.h, `cw_admitted`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdmitKey {
    pub addr: [u8; 16],
    pub ep_id: u32,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdmitVal {
    pub epoch: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Event {
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub kind: u8,
    pub pad: u8,
    pub ep_id: u32,
    pub peer: u32,
    pub rule: u32,
}

// SAFETY: plain-old-data #[repr(C)] structs without padding holes that matter for maps (all
// zero-initialised before use); aya requires `Pod` to copy them to and from the kernel.
unsafe impl aya::Pod for IpcacheKeyData {}
unsafe impl aya::Pod for IpcacheVal {}
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointVal {}
unsafe impl aya::Pod for PolicyKeyData {}
unsafe impl aya::Pod for PolicyVal {}
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtVal {}
unsafe impl aya::Pod for AdmitKey {}
unsafe impl aya::Pod for AdmitVal {}
unsafe impl aya::Pod for Event {}

// The LPM keys are `{prefixlen: u32, data}`: the data offsets are the C offsets minus 4.
const _: () = {
    assert!(size_of::<IpcacheKeyData>() + 4 == c::SIZE_cw_ipcache_key);
    assert!(offset_of!(IpcacheKeyData, slot) + 4 == c::OFF_cw_ipcache_key_slot);
    assert!(offset_of!(IpcacheKeyData, addr) + 4 == c::OFF_cw_ipcache_key_addr);
    assert!(size_of::<IpcacheVal>() == c::SIZE_cw_ipcache_val);
    assert!(offset_of!(IpcacheVal, flags) == c::OFF_cw_ipcache_val_flags);
    assert!(size_of::<EndpointKey>() == c::SIZE_cw_endpoint_key);
    assert!(size_of::<EndpointVal>() == c::SIZE_cw_endpoint_val);
    assert!(offset_of!(EndpointVal, ifindex) == c::OFF_cw_endpoint_val_ifindex);
    assert!(offset_of!(EndpointVal, flags) == c::OFF_cw_endpoint_val_flags);
    assert!(size_of::<PolicyKeyData>() + 4 == c::SIZE_cw_policy_key);
    assert!(offset_of!(PolicyKeyData, slot) + 4 == c::OFF_cw_policy_key_slot);
    assert!(offset_of!(PolicyKeyData, ep_id) + 4 == c::OFF_cw_policy_key_ep_id);
    assert!(offset_of!(PolicyKeyData, peer) + 4 == c::OFF_cw_policy_key_peer);
    assert!(offset_of!(PolicyKeyData, dir) + 4 == c::OFF_cw_policy_key_dir);
    assert!(offset_of!(PolicyKeyData, proto) + 4 == c::OFF_cw_policy_key_proto);
    assert!(offset_of!(PolicyKeyData, port) + 4 == c::OFF_cw_policy_key_port);
    assert!(size_of::<PolicyVal>() == c::SIZE_cw_policy_val);
    assert!(offset_of!(PolicyVal, rule) == c::OFF_cw_policy_val_rule);
    assert!(offset_of!(PolicyVal, audit_rule) == c::OFF_cw_policy_val_audit_rule);
    assert!(size_of::<CtKey>() == c::SIZE_cw_ct_key);
    assert!(offset_of!(CtKey, sport) == c::OFF_cw_ct_key_sport);
    assert!(offset_of!(CtKey, ep_id) == c::OFF_cw_ct_key_ep_id);
    assert!(offset_of!(CtKey, proto) == c::OFF_cw_ct_key_proto);
    assert!(size_of::<CtVal>() == c::SIZE_cw_ct_val);
    assert!(offset_of!(CtVal, epoch) == c::OFF_cw_ct_val_epoch);
    assert!(offset_of!(CtVal, rule) == c::OFF_cw_ct_val_rule);
    assert!(offset_of!(CtVal, flags) == c::OFF_cw_ct_val_flags);
    assert!(size_of::<AdmitKey>() == c::SIZE_cw_admit_key);
    assert!(offset_of!(AdmitKey, ep_id) == c::OFF_cw_admit_key_ep_id);
    assert!(offset_of!(AdmitKey, dport) == c::OFF_cw_admit_key_dport);
    assert!(offset_of!(AdmitKey, dir) == c::OFF_cw_admit_key_dir);
    assert!(size_of::<AdmitVal>() == c::SIZE_cw_admit_val);
    // Kernel only, no mirror: checked to stay one cache line (the point of its layout).
    assert!(c::SIZE_cw_vcache_entry == 64);
    assert!(c::SIZE_cw_epcache_entry == 64);
    // cw_dns_event: {ifindex, len, data[DNS_MAX]}, read by hand in kernel.rs.
    assert!(c::OFF_cw_dns_event_len == 4 && c::OFF_cw_dns_event_data == 8);
    assert!(c::SIZE_cw_dns_event == 8 + DNS_MAX);
    assert!(size_of::<Event>() == c::SIZE_cw_event);
    assert!(offset_of!(Event, sport) == c::OFF_cw_event_sport);
    assert!(offset_of!(Event, proto) == c::OFF_cw_event_proto);
    assert!(offset_of!(Event, kind) == c::OFF_cw_event_kind);
    assert!(offset_of!(Event, ep_id) == c::OFF_cw_event_ep_id);
    assert!(offset_of!(Event, rule) == c::OFF_cw_event_rule);
};

/// IPv4 addresses are stored v4-mapped.
pub fn addr16(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}
