/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_conntrack: connections keyed by their tuple as first seen at one endpoint and
 * direction, with the epoch they were last decided under and the revocation mark (abi.h).
 * Its own header so that building keys, opening (or reopening) an entry and looking one up
 * go through the helpers next to the map.
 */
#ifndef CELLWALL_CONNTRACK_H
#define CELLWALL_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"
#include "parse.h"

/* Pinned: established connections survive an agent restart and a program upgrade. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 262144);
	__type(key, struct cw_ct_key);
	__type(value, struct cw_ct_val);
} cw_conntrack SEC(".maps");

/* The conntrack key of `p` seen at endpoint `ep_id` in direction `dir`. */
static __always_inline void cw_ct_key_of(struct cw_ct_key *k, const struct cw_pkt *p, __u32 ep_id, __u8 dir)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->ep_id = ep_id;
	k->dir = dir;
}

/* The entry under `k`, or 0. Its fields are updated in place by the caller. */
static __always_inline struct cw_ct_val *cw_ct_lookup(const struct cw_ct_key *k)
{
	return bpf_map_lookup_elem(&cw_conntrack, k);
}

/* Records a connection opened under `epoch` (decided by `rule`), with `flags` (CW_CT_*). An
 * entry already under this tuple (its ports reused: a busy client cycles through its ephemeral
 * ports in seconds, well within the LRU's memory) is reset in place: an LRU insert that replaces an element pops a free
 * node and pushes the old one back, about half of the program's cost per connection
 * (docs/benchmarks.md). With `reopen` = 0 (tracking a flow that is not a new connection) an
 * existing entry is left as it is. Returns 1 when the flow is new or reopened. */
static __always_inline int cw_ct_open(struct cw_ct_key *k, __u32 epoch, __u32 rule, int reopen, __u32 flags)
{
	struct cw_ct_val *old = bpf_map_lookup_elem(&cw_conntrack, k);
	if (old && !reopen)
		return 0; /* every later packet of an unpoliced UDP flow: no clock read */
	__u64 now = bpf_ktime_get_ns();
	if (old) {
		/* Flags before epoch: a concurrent reader that sees the new epoch sees no stale
		 * revocation mark. */
		old->flags = flags;
		old->rule = rule;
		old->packets = 1;
		old->created_ns = now;
		old->epoch = epoch;
		return 1;
	}
	struct cw_ct_val nv = {};
	nv.created_ns = now;
	nv.packets = 1;
	nv.epoch = epoch;
	nv.rule = rule;
	nv.flags = flags;
	/* NOEXIST: when two CPUs race to open the same tuple, one entry wins and one event. */
	return bpf_map_update_elem(&cw_conntrack, k, &nv, BPF_NOEXIST) == 0;
}

#endif
