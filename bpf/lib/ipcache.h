/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_ipcache: peer address (or CIDR) -> identity, one LPM trie for both families (IPv4
 * v4-mapped) and both policy slots. Its own header because the identity lookup is the only
 * reader, and a relabel or an address change is a write here, never a policy recompile.
 */
#ifndef CELLWALL_IPCACHE_H
#define CELLWALL_IPCACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"

/* Pinned (reused across agent upgrades). No prealloc: an LPM trie requires it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct cw_ipcache_key);
	__type(value, struct cw_ipcache_val);
} cw_ipcache SEC(".maps");

/* The identity of `addr` in `slot`: the longest matching prefix, else CW_ID_WORLD. */
static __always_inline __u32 cw_identity(__u32 slot, const __u64 *addr)
{
	struct cw_ipcache_key k = {};
	k.prefixlen = 32 + 128;
	k.slot = slot;
	__builtin_memcpy(k.addr, addr, 16);
	struct cw_ipcache_val *v = bpf_map_lookup_elem(&cw_ipcache, &k);
	return v ? v->identity : CW_ID_WORLD;
}

#endif
