/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_vcache: the per-CPU, direct-mapped verdict cache in front of the ipcache and policy
 * tries (abi.h has the entry and why it is exact). Its own header because it is the one
 * stateful layer between the flow and the tries: everything that fills or reads an entry is
 * here, next to the map, so the epoch tag that makes it exact is checked in one place.
 */
#ifndef CELLWALL_VCACHE_H
#define CELLWALL_VCACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"
#include "parse.h"
#include "policy.h"

/* Not pinned: a new program starts with an empty cache. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CW_VCACHE_SIZE);
	__type(key, __u32);
	__type(value, struct cw_vcache_entry);
} cw_vcache SEC(".maps");

/* Index into the verdict cache: a multiplicative mix of the key's words (no loop, no helper). */
static __always_inline __u32 cw_vcache_index(__u32 ep_id, const __u64 *addr, __u16 dport, __u8 proto, __u8 dir)
{
	__u32 h = ep_id * 0x9e3779b1u;
	h = (h ^ (__u32)addr[0]) * 0x85ebca6bu;
	h = (h ^ (__u32)(addr[0] >> 32)) * 0xc2b2ae35u;
	h = (h ^ (__u32)addr[1]) * 0x85ebca6bu;
	h = (h ^ (__u32)(addr[1] >> 32)) * 0xc2b2ae35u;
	h = (h ^ ((__u32)dport << 16 | (__u32)proto << 8 | dir)) * 0x9e3779b1u;
	return (h ^ (h >> 16)) & (CW_VCACHE_SIZE - 1);
}

static __always_inline int cw_vcache_match(const struct cw_vcache_entry *e, __u32 epoch, __u32 ep_id, const __u64 *y, __u16 dport, __u8 proto, __u8 dir)
{
	const __u64 *x = (const __u64 *)e->addr;
	return e->valid && e->epoch == epoch && e->ep_id == ep_id && e->dport == dport &&
	       e->proto == proto && e->dir == dir && x[0] == y[0] && x[1] == y[1];
}

/* cw_decide through the verdict cache (abi.h). `peek` answers only from the cache (0 when it
 * has no entry) and never walks the tries: for segments that are usually replies, where
 * conntrack is the better first question. Returns 1 with `out` filled when answered. */
static __always_inline int cw_decide_cached(__u32 slot, __u32 epoch, const struct cw_endpoint_val *ep, __u8 dir, const struct cw_pkt *p, int peek, struct cw_verdict *out)
{
	const __u64 *addr = cw_peer_addr(p, dir);
	__u32 idx = cw_vcache_index(ep->ep_id, addr, p->dport, p->proto, dir);
	struct cw_vcache_entry *e = bpf_map_lookup_elem(&cw_vcache, &idx);
	if (e && cw_vcache_match(e, epoch, ep->ep_id, addr, p->dport, p->proto, dir)) {
		out->allow = e->allow;
		out->audit_allow = e->audit_allow;
		out->rule = e->rule;
		out->audit_rule = e->audit_rule;
		out->peer = e->peer;
		out->entry = e;
		return 1;
	}
	if (peek)
		return 0;
	*out = cw_decide(slot, ep, dir, p);
	out->entry = e;
	if (e) {
		/* Programs run to completion on their CPU (no nesting on one CPU's entry). */
		__builtin_memcpy(e->addr, addr, 16);
		e->ep_id = ep->ep_id;
		e->epoch = epoch;
		e->dport = p->dport;
		e->proto = p->proto;
		e->dir = dir;
		e->allow = out->allow;
		e->audit_allow = out->audit_allow;
		e->rule = out->rule;
		e->audit_rule = out->audit_rule;
		e->peer = out->peer;
		e->admitted = 0;
		e->valid = 1;
	}
	return 1;
}

#endif
