/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_policy: the LPM trie keyed (slot, endpoint, peer identity, direction, protocol, port
 * prefix) -> verdict and rule, and the decision over it: exact peer row, else wildcard row.
 * Declared beside cw_decide, its one reader, so the lookup order and the fail-closed rule for
 * a missing row are next to the table they read.
 */
#ifndef CELLWALL_POLICY_H
#define CELLWALL_POLICY_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"
#include "parse.h"
#include "ipcache.h"

/* Pinned (reused across agent upgrades); both slots in one trie (the slot is a key field). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4194304);
	__type(key, struct cw_policy_key);
	__type(value, struct cw_policy_val);
} cw_policy SEC(".maps");

/* A decision: the verdict, the rules behind it and the peer's identity. */
struct cw_verdict {
	__u8 allow;
	__u8 audit_allow;
	__u32 rule;
	__u32 audit_rule;
	__u32 peer;
	/* This CPU's verdict cache entry that holds the verdict (0 when there is none). */
	struct cw_vcache_entry *entry;
};

/* The verdict for `p` at endpoint `ep` in direction `dir` under `slot`, from the tries (no cache:
 * vcache.h puts one in front). */
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

#endif
