/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_endpoints (local endpoint address -> endpoint: id, interface, policy flags per slot)
 * and cw_epcache, the per-CPU endpoint cache in front of it (abi.h has why it is exact). Both
 * here because the cache is only ever filled from the map, by the one lookup below.
 */
#ifndef CELLWALL_ENDPOINT_H
#define CELLWALL_ENDPOINT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"

/* Pinned: written by the agent's commits, read by every packet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 16384);
	__type(key, struct cw_endpoint_key);
	__type(value, struct cw_endpoint_val);
} cw_endpoints SEC(".maps");

/* Not pinned: a new program starts with an empty cache. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CW_EPCACHE_SIZE);
	__type(key, __u32);
	__type(value, struct cw_epcache_entry);
} cw_epcache SEC(".maps");

/* The endpoint at `addr`, seen on interface `ifindex` under `epoch` (read before this call), or
 * 0 when the address is no local endpoint. The pointer is to this CPU's cached copy (or the map
 * value if the cache is unavailable): read it, never write it. */
static __always_inline const struct cw_endpoint_val *cw_endpoint(__u32 ifindex, const __u64 *addr, __u32 epoch)
{
	__u32 idx = ifindex & (CW_EPCACHE_SIZE - 1);
	struct cw_epcache_entry *e = bpf_map_lookup_elem(&cw_epcache, &idx);
	if (e) {
		const __u64 *x = (const __u64 *)e->addr;
		if (e->valid && e->epoch == epoch && e->ifindex == ifindex && x[0] == addr[0] && x[1] == addr[1])
			return &e->ep;
	}
	struct cw_endpoint_key k;
	__builtin_memcpy(k.addr, addr, 16);
	struct cw_endpoint_val *v = bpf_map_lookup_elem(&cw_endpoints, &k);
	if (!v || !e)
		return v;
	/* Programs run to completion on their CPU (no nesting on one CPU's entry). */
	__builtin_memcpy(e->addr, addr, 16);
	e->ifindex = ifindex;
	e->epoch = epoch;
	e->ep = *v;
	e->valid = 1;
	return &e->ep;
}

#endif
