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
 *
 * Only solicited answers are held, so only they are learned: the reply of a query this endpoint
 * sent and its egress policy admitted (a UDP flow tracked by its 5-tuple; for TCP, also a pair
 * admitted without an entry, keyed by server address and port). Anything else from port 53 (a
 * workload or host "answering" unasked, to plant an address under an allowed name) takes the
 * normal path unlearned.
 */
#ifndef CELLWALL_DNS_H
#define CELLWALL_DNS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../abi.h"
#include "parse.h"
#include "events.h"
#include "conntrack.h"
#include "admitted.h"

/* Not pinned: a held answer is only meaningful to the agent that will release it; after a
 * restart the client's retry is held again. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} cw_dns SEC(".maps");

/* CW_DNS_CNT_*, per CPU. Not pinned (counts restart with the agent): cw_counters, pinned, has a
 * frozen size (tests/maps.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CW_DNS_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} cw_dns_counters SEC(".maps");

static __always_inline void cw_dns_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&cw_dns_counters, &idx);
	if (c)
		*c += 1;
}

/* Whether `p`, arriving at `ep`, answers a query `ep` sent and policy admitted. */
static __always_inline int cw_dns_solicited(const struct cw_endpoint_val *ep, const struct cw_pkt *p)
{
	struct cw_pkt q;
	cw_reverse(&q, p);
	struct cw_ct_key k;
	cw_ct_key_of(&k, &q, ep->ep_id, CW_DIR_EGRESS);
	if (cw_ct_lookup(&k))
		return 1;
	return p->proto == IPPROTO_TCP && cw_was_admitted(ep, CW_DIR_EGRESS, &q);
}

/* Returns 1 when the packet was held (the caller drops it), 0 when it goes on. */
static __always_inline int cw_dns_hold(struct __sk_buff *skb, const struct cw_endpoint_val *ep, const struct cw_pkt *p)
{
	if (p->sport != bpf_htons(53) || (p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP))
		return 0;
	if (skb->mark == CW_DNS_RELEASE_MARK)
		return 0;
	if (!cw_dns_solicited(ep, p)) {
		cw_dns_count(CW_DNS_CNT_UNSOLICITED);
		return 0;
	}
	__u32 len = skb->len;
	if (len == 0 || len >= CW_DNS_MAX)
		return 0;
	struct cw_dns_event *e = bpf_ringbuf_reserve(&cw_dns, sizeof(*e), 0);
	if (!e) {
		/* Dropped, not passed: an answer the agent never saw would open nothing anyway, and
		 * the client asks again. */
		cw_dns_count(CW_DNS_CNT_LOST);
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
	cw_dns_count(CW_DNS_CNT_HELD);
	return 1;
}

#endif
