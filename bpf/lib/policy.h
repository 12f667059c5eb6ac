/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* Identity and policy lookup: peer address -> identity -> (exact peer row, else wildcard row). */
#ifndef CELLWALL_POLICY_H
#define CELLWALL_POLICY_H

struct cw_verdict {
	__u8 allow;
	__u8 audit_allow;
	__u32 rule;
	__u32 audit_rule;
	__u32 peer;
	/* This CPU's verdict cache entry that holds the verdict (0 when there is none). */
	struct cw_vcache_entry *entry;
};

static __always_inline __u32 cw_identity(__u32 slot, const __u64 *addr)
{
	struct cw_ipcache_key k = {};
	k.prefixlen = 32 + 128;
	k.slot = slot;
	__builtin_memcpy(k.addr, addr, 16);
	struct cw_ipcache_val *v = bpf_map_lookup_elem(&cw_ipcache, &k);
	return v ? v->identity : CW_ID_WORLD;
}

static __always_inline struct cw_verdict cw_decide(__u32 slot, const struct cw_endpoint_val *ep, __u8 dir, const struct cw_pkt *p)
{
	struct cw_verdict out = {.allow = 1, .audit_allow = 1};
	__u32 has = ep->flags[slot & 1] & (dir == CW_DIR_EGRESS ? CW_EP_HAS_EGRESS_POLICY : CW_EP_HAS_INGRESS_POLICY);
	if (!has)
		return out; /* no policy selects this endpoint in this direction */
	out.peer = cw_identity(slot, cw_peer_addr(p, dir));
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP) {
		/* Policy speaks TCP, UDP and SCTP; other protocols to a policed endpoint are dropped. */
		out.allow = 0;
		out.audit_allow = 0;
		return out;
	}
	struct cw_policy_key k = {};
	k.prefixlen = CW_POLICY_FIXED_BITS + 16;
	k.slot = slot;
	k.ep_id = ep->ep_id;
	k.peer = out.peer;
	k.dir = dir;
	k.proto = p->proto;
	__builtin_memcpy(k.port, &p->dport, 2);
	struct cw_policy_val *v = bpf_map_lookup_elem(&cw_policy, &k);
	if (!v) {
		k.peer = CW_ID_ANY;
		v = bpf_map_lookup_elem(&cw_policy, &k);
	}
	if (!v) {
		/* The wildcard rows are complete for policed endpoints: a miss means a table being
		 * written wrongly; fail closed. */
		out.allow = 0;
		out.audit_allow = 0;
		return out;
	}
	out.allow = v->allow;
	out.audit_allow = v->audit_allow;
	out.rule = v->rule;
	out.audit_rule = v->audit_rule;
	return out;
}

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

static __always_inline void cw_admit_key_of(struct cw_admit_key *k, const struct cw_endpoint_val *ep, __u8 dir, const struct cw_pkt *p)
{
	__builtin_memcpy(k->addr, cw_peer_addr(p, dir), 16);
	k->ep_id = ep->ep_id;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
}

/* Records that `dir` admitted a connection of the packet's pair (cw_admitted in abi.h): a map
 * lookup once per verdict cache fill, nothing for the pair's later connections on this CPU. */
static __always_inline void cw_record_admission(const struct cw_endpoint_val *ep, __u8 dir, const struct cw_pkt *p, __u32 epoch, struct cw_verdict *v)
{
	struct cw_vcache_entry *e = v->entry;
	if (e && e->admitted)
		return;
	struct cw_admit_key k = {};
	cw_admit_key_of(&k, ep, dir, p);
	/* A lookup first: an LRU insert pops a free node even when the key exists. A hit also
	 * marks the record recently used. */
	if (!bpf_map_lookup_elem(&cw_admitted, &k)) {
		struct cw_admit_val nv = {.epoch = epoch};
		bpf_map_update_elem(&cw_admitted, &k, &nv, BPF_NOEXIST);
	}
	if (e)
		e->admitted = 1;
}

/* Whether `dir` ever admitted a connection of the packet's pair (and the record survives). */
static __always_inline int cw_was_admitted(const struct cw_endpoint_val *ep, __u8 dir, const struct cw_pkt *p)
{
	struct cw_admit_key k = {};
	cw_admit_key_of(&k, ep, dir, p);
	return bpf_map_lookup_elem(&cw_admitted, &k) != 0;
}

#endif
