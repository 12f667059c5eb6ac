/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * The one contract between the kernel programs and user space: every map key, map value and
 * event layout. The Rust side (crates/datapath/src/abi.rs) mirrors these structs and checks
 * their sizes and field offsets against the values below at build time (see build.rs, which
 * compiles bpf/abi_layout.c and compares), so the two cannot drift silently.
 *
 * Addresses are 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d), so one map serves both
 * families. Ports are stored big-endian (network order) so that LPM prefixes over them work.
 */
#ifndef CELLWALL_ABI_H
#define CELLWALL_ABI_H

#include <linux/types.h>

#define CW_DIR_INGRESS 0 /* traffic entering the endpoint */
#define CW_DIR_EGRESS 1  /* traffic leaving the endpoint */

#define CW_ID_ANY 0   /* wildcard peer row */
#define CW_ID_WORLD 2 /* nothing in the ipcache matched */

#define CW_POLICY_SLOTS 2 /* double buffering: updates are written to the inactive slot */

/* ipcache: LPM trie, address -> peer identity. prefixlen counts the 32 slot bits. */
struct cw_ipcache_key {
	__u32 prefixlen;
	__u32 slot;
	__u8 addr[16];
};

struct cw_ipcache_val {
	__u32 identity;
	__u32 flags;
};

/* endpoints: hash, local endpoint address -> endpoint. */
struct cw_endpoint_key {
	__u8 addr[16];
};

#define CW_EP_HAS_INGRESS_POLICY (1 << 0)
#define CW_EP_HAS_EGRESS_POLICY (1 << 1)
/* Its egress rules name DNS domains: DNS answers to it are held (lib/dns.h) until the agent has
 * programmed their addresses, then re-sent by the agent with CW_DNS_RELEASE_MARK. */
#define CW_EP_LEARNS_NAMES (1 << 2)

struct cw_endpoint_val {
	__u32 ep_id;
	/* The host-side interface the endpoint's packets must arrive on (anti-spoofing); 0 = any. */
	__u32 ifindex;
	/* Per slot: CW_EP_HAS_* flags. */
	__u32 flags[CW_POLICY_SLOTS];
};

/*
 * policy: LPM trie. Fixed fields first (always fully matched), then the destination port,
 * matched by prefix so that a port range is a handful of entries. prefixlen = 112 + port bits.
 */
struct cw_policy_key {
	__u32 prefixlen;
	__u32 slot;
	__u32 ep_id;
	__u32 peer;
	__u8 dir;
	__u8 proto;
	__u8 port[2]; /* big-endian */
};

#define CW_POLICY_FIXED_BITS 112

struct cw_policy_val {
	__u8 allow;
	__u8 audit_allow;
	__u16 pad;
	__u32 rule;
	__u32 audit_rule;
};

/* config: array of __u32 words (CW_CFG_MAX).
 * CW_CFG_SLOT: the policy slot in force. CW_CFG_EPOCH: bumped on every committed policy change;
 * conntrack entries validated under an older epoch are re-checked on their next packet
 * (revocation of established connections). User space writes the slot, then the epoch; programs
 * read the epoch, then the slot. */
#define CW_CFG_SLOT 0
#define CW_CFG_EPOCH 1
#define CW_CFG_FLAGS 2
#define CW_CFG_MAX 3

/* CW_CFG_FLAGS bits. Zero (the state of fresh maps) means full visibility. */
#define CW_F_VISIBILITY_OFF (1 << 0) /* no flow events; endpoints without policy skip tracking */

/* conntrack: LRU hash, keyed by the tuple as first seen at one endpoint and direction. */
struct cw_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u32 ep_id;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

#define CW_CT_REVOKED (1 << 0) /* denied by a newer policy: dropped until a later policy allows it */

/*
 * admitted: LRU hash of the pairs (endpoint, direction, peer address, protocol, port) a policed
 * direction admitted a TCP connection for while the opposite direction policed nothing. Such a
 * connection gets no conntrack entry: its replies cross an unpoliced direction, and its own
 * segments pass on the verdict cache. What the entry was still for is revocation: a segment
 * the policy now denies would otherwise pass as a reply of a connection the endpoint opened
 * before it was tracked (the opposite direction admits anything). A recorded pair says the
 * segment's connection was most likely admitted inbound, so it is revoked instead (and then
 * tracked as revoked). One record per pair, not per connection: a client's thousands of
 * connections to one server port are one entry.
 */
struct cw_admit_key {
	__u8 addr[16]; /* the peer's address */
	__u32 ep_id;
	__u16 dport; /* network order */
	__u8 proto;
	__u8 dir;
};

struct cw_admit_val {
	__u32 epoch; /* the epoch the pair was first recorded under (for inspection only) */
	__u32 pad;
};

struct cw_ct_val {
	__u64 created_ns;
	__u64 packets;
	__u32 epoch;
	__u32 rule;
	__u32 flags;
	__u32 pad;
};

/*
 * Verdict cache (kernel only; user space never reads it): per CPU, direct mapped, in front of
 * the ipcache and policy tries. A verdict is a function of (slot, endpoint, direction, peer
 * address, protocol, destination port) and every committed change bumps the epoch, so an entry
 * tagged with the current epoch is exactly what the tries would answer. In a real node a
 * connection's packets come back out of the CPU's cache after the rest of the network stack ran:
 * each trie level and each conntrack bucket is a cache miss (docs/benchmarks.md measured a
 * conntrack hit at ~250 ns and a 10,000-rule decision at ~900 ns in the lab, against 30 ns and
 * 200 ns warm). One entry is one cache line.
 */
#define CW_VCACHE_SIZE 4096 /* a power of two */

struct cw_vcache_entry {
	__u8 addr[16]; /* the peer's address */
	__u32 ep_id;
	__u32 epoch;
	__u16 dport; /* network order */
	__u8 proto;
	__u8 dir;
	__u8 valid;
	__u8 allow;
	__u8 audit_allow;
	__u8 admitted; /* the pair is in cw_admitted (checked once per fill, not per connection) */
	__u32 rule;
	__u32 audit_rule;
	__u32 peer; /* the peer's identity */
	__u32 pad2[5]; /* 64 bytes */
};

/*
 * Endpoint cache (kernel only): per CPU, direct mapped by the host-side interface, in front of
 * cw_endpoints. Every packet needs its endpoint, and a hash lookup (hash the 16-byte address,
 * walk a bucket, compare the key out of line) was ~20% of the programs' time in the lab, paid
 * ~6 times per connection. Endpoints are written only by a commit, which bumps the epoch after
 * writing them, so an entry tagged with the current epoch is what cw_endpoints holds (or held
 * moments before, as a packet racing the write could have read anyway).
 */
#define CW_EPCACHE_SIZE 1024 /* a power of two */

struct cw_epcache_entry {
	__u8 addr[16]; /* the endpoint's address */
	__u32 ifindex; /* the interface the packet was seen on (the index's source) */
	__u32 epoch;
	struct cw_endpoint_val ep;
	__u32 valid;
	__u32 pad[5]; /* 64 bytes */
};

/* Flow events (ring buffer): one per new connection decision, never per packet. */
#define CW_EV_ALLOW 1
#define CW_EV_DENY 2
#define CW_EV_AUDIT 3  /* allowed, but an audit-mode policy would have denied */
#define CW_EV_REVOKE 4 /* an established connection denied by a newer policy */

struct cw_event {
	__u64 ts_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;
	__u8 kind;
	__u8 pad;
	__u32 ep_id;
	__u32 peer;
	__u32 rule;
};

/* Counters: per-CPU array indexed by these. */
#define CW_CNT_ALLOWED 0
#define CW_CNT_DENIED 1
#define CW_CNT_AUDIT 2
#define CW_CNT_CT_HIT 3
#define CW_CNT_EVENTS_LOST 4
#define CW_CNT_SPOOFED 5
#define CW_CNT_REVOKED 6
#define CW_CNT_MAX 8

/* A DNS answer held on its way to an endpoint that learns names: the whole frame as tc saw it
 * (from the Ethernet header), and the interface to send it out of once learned. Frames of
 * CW_DNS_MAX bytes or more are not held (counted; their addresses stay unlearned). */
#define CW_DNS_MAX 4096
/* skb->mark of a released answer: not held again. Marks do not cross network namespaces (the
 * veth scrubs them), so a workload cannot set it. */
#define CW_DNS_RELEASE_MARK 0x43574e53
/* cw_dns_counters (lib/dns.h): its own map, not cw_counters, whose pinned size is frozen. */
#define CW_DNS_CNT_HELD 0        /* answers held for the agent to learn */
#define CW_DNS_CNT_LOST 1        /* ... dropped because cw_dns was full (the client asks again) */
#define CW_DNS_CNT_UNSOLICITED 2 /* answers to no query of the endpoint: passed on, not learned */
#define CW_DNS_CNT_MAX 3
struct cw_dns_event {
	__u32 ifindex;
	__u32 len;
	__u8 data[CW_DNS_MAX];
};

#endif
