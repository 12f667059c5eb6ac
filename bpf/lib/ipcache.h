/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_ipcache2: peer address (or CIDR) -> identity, one LPM trie for both families (IPv4
 * v4-mapped) and both policy slots. Its own header because the identity lookup is the only
 * reader, and a relabel or an address change is a write here, never a policy recompile.
 *
 * cw_ipcache2 replaces cw_ipcache (262,144 entries over two slots: 131,072 addresses). The
 * agent copies a pinned cw_ipcache into it before any program of this object runs, then
 * removes the old pin (KernelDatapath::open_in): an upgrade has no window without identities.
 */
#ifndef CELLWALL_IPCACHE_H
#define CELLWALL_IPCACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"

/* Pinned (reused across agent upgrades). No prealloc (an LPM trie requires it), so the
 * capacity costs nothing until used: 2^21 entries hold 1,048,576 addresses in each slot,
 * twice Cilium's 512k ipcache. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 21);
	__type(key, struct cw_ipcache_key);
	__type(value, struct cw_ipcache_val);
} cw_ipcache2 SEC(".maps");

/* The identity of `addr` in `slot`: the longest matching prefix, else CW_ID_WORLD. */
static __always_inline __u32 cw_identity(__u32 slot, const __u64 *addr)
{
	struct cw_ipcache_key k = {};
	k.prefixlen = 32 + 128;
	k.slot = slot;
	__builtin_memcpy(k.addr, addr, 16);
	struct cw_ipcache_val *v = bpf_map_lookup_elem(&cw_ipcache2, &k);
	return v ? v->identity : CW_ID_WORLD;
}

#endif
