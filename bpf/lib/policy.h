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
};

static __always_inline __u32 cw_identity(__u32 slot, const __u8 *addr)
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
	out.peer = cw_identity(slot, dir == CW_DIR_EGRESS ? p->daddr : p->saddr);
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

#endif
