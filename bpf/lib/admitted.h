/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_admitted: the pairs (endpoint, direction, peer, protocol, port) a policed direction
 * admitted TCP connections for without a conntrack entry (abi.h has why). Its own header: the
 * record is written once per verdict-cache fill and read only to revoke, and both live here.
 */
#ifndef CELLWALL_ADMITTED_H
#define CELLWALL_ADMITTED_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"
#include "parse.h"
#include "policy.h"

/* Pinned: a pair recorded by the previous program still revokes its connections after an
 * upgrade. LRU: an evicted pair loses revocation for its untracked connections (ARCHITECTURE.md). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 262144);
	__type(key, struct cw_admit_key);
	__type(value, struct cw_admit_val);
} cw_admitted SEC(".maps");

/* The pair key of `p` seen at `ep` in `dir`. */
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
