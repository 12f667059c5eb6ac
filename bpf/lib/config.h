/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_config: the words user space writes to switch policy (slot, epoch, flags; abi.h has
 * their meaning). Its own header because every packet reads it first, and the read order the
 * one-policy-per-packet invariant rests on is stated here, beside the map.
 */
#ifndef CELLWALL_CONFIG_H
#define CELLWALL_CONFIG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"

/* Pinned: the policy in force survives the agent and a program upgrade. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, CW_CFG_MAX);
	__type(key, __u32);
	__type(value, __u32);
} cw_config SEC(".maps");

/* The configuration word `k` (CW_CFG_*), or 0. Read each word once per packet, the epoch
 * before the slot: user space writes the slot, then the epoch, so a packet that sees the new
 * epoch also sees the new slot. */
static __always_inline __u32 *cw_config_word(const __u32 *k)
{
	return bpf_map_lookup_elem(&cw_config, k);
}

#endif
