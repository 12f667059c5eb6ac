/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Owns cw_dns: DNS answers held on their way to an endpoint that learns names (FQDN egress
 * policy). The first connection after a lookup must not race the agent: the answer reaches the
 * workload only after the agent has read it and programmed its addresses, so the workload cannot
 * connect to an address policy does not know yet. Held frames are copied whole into the ring and
 * dropped here; the agent parses them, updates the policy, and sends each frame again out of the
 * same interface with CW_DNS_RELEASE_MARK, which this check lets through to the normal path.
 *
 * TCP segments from port 53 are all held (also those without payload): the agent reassembles
 * the stream and releases each segment after the answers it completes are programmed.
 */
#ifndef CELLWALL_DNS_H
#define CELLWALL_DNS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../abi.h"
#include "parse.h"
#include "events.h"

/* Not pinned: a held answer is only meaningful to the agent that will release it; after a
 * restart the client's retry is held again. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} cw_dns SEC(".maps");

/* Returns 1 when the packet was held (the caller drops it), 0 when it goes on. */
static __always_inline int cw_dns_hold(struct __sk_buff *skb, const struct cw_pkt *p)
{
	if (p->sport != bpf_htons(53) || (p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP))
		return 0;
	if (skb->mark == CW_DNS_RELEASE_MARK)
		return 0;
	__u32 len = skb->len;
	if (len == 0 || len >= CW_DNS_MAX)
		return 0;
	struct cw_dns_event *e = bpf_ringbuf_reserve(&cw_dns, sizeof(*e), 0);
	if (!e) {
		/* Dropped, not passed: an answer the agent never saw would open nothing anyway, and
		 * the client asks again. */
		cw_count(CW_CNT_DNS_LOST);
		return 1;
	}
	/* 1..CW_DNS_MAX for the verifier; equal to len, which is below CW_DNS_MAX. */
	__u32 n = ((len - 1) & (CW_DNS_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, 0, e->data, n) < 0) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	e->ifindex = skb->ifindex;
	e->len = n;
	/* Woken: the agent sleeps on this ring, and every answer waits for it. */
	bpf_ringbuf_submit(e, 0);
	cw_count(CW_CNT_DNS_HELD);
	return 1;
}

#endif
