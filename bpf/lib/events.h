/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns what the datapath tells user space: cw_events (the flow event ring buffer), cw_counters
 * (global counters) and cw_rule_hits (new connections per deciding rule). One header because
 * they are one output: a decision counts, credits its rule and, with visibility on, reports.
 */
#ifndef CELLWALL_EVENTS_H
#define CELLWALL_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../abi.h"
#include "parse.h"

/* Pinned: events not yet drained survive an agent restart. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1 << 22);
} cw_events SEC(".maps");

/* Global counters (CW_CNT_*), per CPU. Pinned: they count across agent restarts. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, CW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} cw_counters SEC(".maps");

/* Per-rule hit counters: new connections decided by each rule (rule id -> count), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} cw_rule_hits SEC(".maps");

static __always_inline void cw_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&cw_counters, &idx);
	if (c)
		*c += 1;
}

/* Credits a new connection to `rule` (0: no rule decided it, nothing to credit). */
static __always_inline void cw_hit(__u32 rule)
{
	if (!rule)
		return;
	__u64 *c = bpf_map_lookup_elem(&cw_rule_hits, &rule);
	if (c) {
		*c += 1;
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&cw_rule_hits, &rule, &one, BPF_NOEXIST);
	}
}

/* Reports a decision about `p` at endpoint `ep_id` (one per new connection, never per packet). */
static __always_inline void cw_emit(const struct cw_pkt *p, __u8 dir, __u8 kind, __u32 ep_id, __u32 peer, __u32 rule)
{
	struct cw_event ev = {};
	ev.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev.saddr, p->saddr, 16);
	__builtin_memcpy(ev.daddr, p->daddr, 16);
	ev.sport = p->sport;
	ev.dport = p->dport;
	ev.proto = p->proto;
	ev.dir = dir;
	ev.kind = kind;
	ev.ep_id = ep_id;
	ev.peer = peer;
	ev.rule = rule;
	/* Never block the datapath on user space: a full ring buffer loses the event, counted.
	 * No wakeup: the agent drains on its own tick and never sleeps on the ring, and a wakeup
	 * is an irq_work per record written into an empty ring. */
	if (bpf_ringbuf_output(&cw_events, &ev, sizeof(ev), BPF_RB_NO_WAKEUP))
		cw_count(CW_CNT_EVENTS_LOST);
}

#endif
