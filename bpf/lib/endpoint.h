/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* The local endpoint a packet belongs to, through the per-CPU endpoint cache (abi.h). */
#ifndef CELLWALL_ENDPOINT_H
#define CELLWALL_ENDPOINT_H

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
