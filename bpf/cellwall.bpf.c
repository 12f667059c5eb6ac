/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Cellwall's tc datapath. Attached on the host side of each workload's veth:
 *   from_pod: tc ingress of the host veth = traffic the workload sends  (its egress)
 *   to_pod:   tc egress of the host veth  = traffic the workload receives (its ingress)
 * Policy is data (maps keyed by identity), so the per-packet cost does not depend on the number
 * of rules: one endpoint lookup, one conntrack lookup and, for new flows, one ipcache and one or
 * two policy LPM lookups.
 *
 * This file holds the entry points and the flow of a packet through them. Every map is
 * declared in the lib/ header that owns it, beside the helpers that read and write it:
 *   lib/config.h     cw_config
 *   lib/events.h     cw_events, cw_counters, cw_rule_hits
 *   lib/endpoint.h   cw_endpoints, cw_epcache
 *   lib/ipcache.h    cw_ipcache2
 *   lib/policy.h     cw_policy
 *   lib/vcache.h     cw_vcache
 *   lib/admitted.h   cw_admitted
 *   lib/conntrack.h  cw_conntrack
 *   lib/dns.h        cw_dns, cw_dns_counters
 * (lib/parse.h owns none.)
 * Layouts of keys, values and events are in abi.h only.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "lib/parse.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/endpoint.h"
#include "lib/ipcache.h"
#include "lib/policy.h"
#include "lib/vcache.h"
#include "lib/admitted.h"
#include "lib/conntrack.h"
#include "lib/dns.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* An IPv6 link-local (fe80::/10) or unspecified (::) address. IPv4 addresses are v4-mapped
 * (::ffff:a.b.c.d), never either. */
static __always_inline int cw_link_scoped(const __u64 *addr)
{
	const __u8 *b = (const __u8 *)addr;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return 1;
	return addr[0] == 0 && addr[1] == 0;
}

/* `strict`: the hook is a pod's host-side veth, where every packet the pod sends must carry an
 * address of the endpoint bound to that veth. A host's NIC (host mode) also forwards packets
 * that are not the host's own, so it is not strict. */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir, int strict)
{
	struct cw_pkt p;
	if (cw_parse(skb, &p) < 0)
		return TC_ACT_OK; /* not IP (ARP, ...): not policy's business */

	/* Epoch first, then slot (config.h): a packet that sees the new epoch also sees the new
	 * slot. Both are read once, so a packet sees one whole policy. Before the endpoint, whose
	 * cached copy is tagged with the epoch. */
	__u32 k_epoch = CW_CFG_EPOCH, k_slot = CW_CFG_SLOT, k_flags = CW_CFG_FLAGS;
	__u32 *pe = cw_config_word(&k_epoch);
	__u32 *ps = cw_config_word(&k_slot);
	__u32 *pf = cw_config_word(&k_flags);
	if (!pe || !ps || !pf)
		return TC_ACT_SHOT;
	__u32 epoch = *pe;
	__u32 slot = *ps & 1;
	int visible = !(*pf & CW_F_VISIBILITY_OFF);

	const struct cw_endpoint_val *ep = cw_endpoint(skb->ifindex, dir == CW_DIR_EGRESS ? p.saddr : p.daddr, epoch);
	if (!ep) {
		/* From a pod, an address that is no local endpoint's is someone else's: a pod posing
		 * as a pod of another node, whose identity the receiving node would trust. IPv6
		 * link-local and unspecified sources pass (neighbour discovery, MLD behind its
		 * hop-by-hop header): they never leave the link, so they pose as no pod. */
		if (strict && dir == CW_DIR_EGRESS && !cw_link_scoped(p.saddr)) {
			cw_count(CW_CNT_SPOOFED);
			return TC_ACT_SHOT;
		}
		return TC_ACT_OK; /* not a local endpoint (e.g. the node itself) */
	}
	if (dir == CW_DIR_EGRESS && ep->ifindex && skb->ifindex != ep->ifindex) {
		cw_count(CW_CNT_SPOOFED);
		return TC_ACT_SHOT; /* a workload sending with another endpoint's address */
	}

	if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6)
		return TC_ACT_OK; /* errors and neighbour discovery must flow; see ARCHITECTURE.md */

	/* A DNS answer to an endpoint that learns names waits for the agent (lib/dns.h); released,
	 * it comes back marked and takes the normal path below. */
	if (dir == CW_DIR_INGRESS && (ep->flags[slot] & CW_EP_LEARNS_NAMES) && cw_dns_hold(skb, ep, &p))
		return TC_ACT_SHOT;

	/* An endpoint no policy selects has nothing to enforce; with visibility off it is not even
	 * tracked (connections made now are re-decided packet by packet if policy arrives later). */
	if (!visible && !ep->flags[slot])
		return TC_ACT_OK;

	int syn = p.proto == IPPROTO_TCP && (p.tcp_flags & (CW_TCP_SYN | CW_TCP_ACK)) == CW_TCP_SYN;
	__u32 mask = dir == CW_DIR_EGRESS ? CW_EP_HAS_EGRESS_POLICY : CW_EP_HAS_INGRESS_POLICY;
	int policed = ep->flags[slot] & mask;
	/* Nothing to enforce in this direction and a TCP segment that opens nothing: no lookup. */
	if (!policed && p.proto == IPPROTO_TCP && !syn)
		return TC_ACT_OK;

	/* A TCP segment of a connection this direction's policy admits passes on the cached
	 * verdict alone: the same answer conntrack would give (an entry validated under this
	 * epoch), from one cache line instead of a hash bucket and entry. Segments the cache
	 * does not admit (replies, revoked or unknown connections) ask conntrack below. Before any
	 * conntrack key is built: this is most segments of a policed direction. */
	struct cw_verdict v;
	if (p.proto == IPPROTO_TCP && !syn && cw_decide_cached(slot, epoch, ep, dir, &p, 1, &v) && v.allow) {
		cw_count(CW_CNT_CT_HIT);
		return TC_ACT_OK;
	}

	/* Whether the opposite direction is policed: its replies need a conntrack entry then. */
	int opposite = ep->flags[slot] & (mask ^ (CW_EP_HAS_INGRESS_POLICY | CW_EP_HAS_EGRESS_POLICY));
	/* Conntrack keys are built where they are used: a SYN admitted without an entry (the
	 * most common new connection) builds none. */
	struct cw_ct_key fwd, rev;
	struct cw_pkt rp; /* p reversed, where a reverse key is built */

	if (!policed) {
		/* Nothing to enforce in this direction: every packet passes. Only flows it opens are
		 * recorded, so their replies pass the policed opposite direction (and are seen).
		 * A TCP connection opened while the opposite direction is unpoliced too is reported
		 * but not tracked: its replies pass an unpoliced direction, and if policy arrives
		 * there later they pass as segments of a connection that direction's opposite
		 * admits (below). Saves a conntrack write per connection of every unpoliced pod. */
		if (syn && !opposite) {
			cw_count(CW_CNT_ALLOWED);
			if (visible)
				cw_emit(&p, dir, CW_EV_ALLOW, ep->ep_id, 0, 0);
			return TC_ACT_OK;
		}
		/* A SYN is a new connection even on a reused tuple (reported again); other packets
		 * of a known flow only pass. */
		cw_ct_key_of(&fwd, &p, ep->ep_id, dir);
		if (!syn) {
			if (cw_ct_lookup(&fwd))
				return TC_ACT_OK; /* a later packet of a flow this direction opened */
			/* A reply of a flow the opposite direction tracks opens nothing: recorded, it
			 * was reported as a flow to the peer's (ephemeral) port, and once this direction
			 * was policed it was decided again as a flow this direction opened, so the
			 * replies of a flow the other direction still admits were revoked. */
			cw_reverse(&rp, &p);
			cw_ct_key_of(&rev, &rp, ep->ep_id, dir ^ 1);
			if (cw_ct_lookup(&rev))
				return TC_ACT_OK;
		}
		if (cw_ct_open(&fwd, epoch, 0, syn, 0)) {
			cw_count(CW_CNT_ALLOWED);
			if (visible)
				cw_emit(&p, dir, CW_EV_ALLOW, ep->ep_id, 0, 0);
		}
		return TC_ACT_OK;
	}

	/* Established or related (reply) traffic. A TCP SYN opens a new connection by definition:
	 * it is always decided afresh (also when it reuses the tuple of an old one). */
	struct cw_ct_val *ct = 0;
	struct cw_ct_key *orig = &fwd;
	if (!syn) {
		cw_ct_key_of(&fwd, &p, ep->ep_id, dir);
		ct = cw_ct_lookup(&fwd);
		if (!ct) {
			cw_reverse(&rp, &p);
			cw_ct_key_of(&rev, &rp, ep->ep_id, dir ^ 1);
			ct = cw_ct_lookup(&rev);
			orig = &rev;
		}
	}
	if (ct) {
		if (ct->epoch == epoch) {
			if (ct->flags & CW_CT_REVOKED)
				return TC_ACT_SHOT; /* revoked: stays cut until a newer policy admits it */
			ct->packets += 1;
			cw_count(CW_CNT_CT_HIT);
			/* A segment the cache could not answer, of a connection this direction admitted
			 * under this epoch: this CPU has not decided the pair yet (its cache is its
			 * own). Deciding once now lets the connection's later segments on this CPU, and
			 * the next connections of the pair, pass on the cached verdict. */
			if (orig == &fwd && p.proto == IPPROTO_TCP)
				cw_decide_cached(slot, epoch, ep, dir, &p, 0, &v);
			return TC_ACT_OK;
		}
		/* Policy changed since this connection was admitted: decide it again, as its opener
		 * sent it. */
		const struct cw_pkt *op = orig == &rev ? &rp : &p;
		cw_decide_cached(slot, epoch, ep, orig->dir, op, 0, &v);
		ct->epoch = epoch;
		ct->rule = v.rule;
		if (!v.allow) {
			/* Kept (not deleted) and marked, so later segments of the connection cannot pass
			 * as untracked replies. */
			if (!(ct->flags & CW_CT_REVOKED)) {
				ct->flags |= CW_CT_REVOKED;
				cw_count(CW_CNT_REVOKED);
				if (visible)
					cw_emit(op, orig->dir, CW_EV_REVOKE, ep->ep_id, v.peer, v.rule);
			}
			return TC_ACT_SHOT;
		}
		ct->flags &= ~CW_CT_REVOKED;
		ct->packets += 1;
		return TC_ACT_OK;
	}

	cw_decide_cached(slot, epoch, ep, dir, &p, 0, &v);
	if (!v.allow) {
		/* A TCP segment that does not open a connection may belong to one made before this
		 * endpoint was tracked: let it through if the opposite direction admits the
		 * connection it belongs to. Nothing is recorded, so it never opens a path for a SYN.
		 * Unless this direction admitted connections of the segment's pair without tracking
		 * them (cw_admitted): then it is one of those, revoked. It is tracked as revoked from
		 * here, so its next segments stop at conntrack and it is reported once. */
		if (p.proto == IPPROTO_TCP && !syn) {
			if (cw_was_admitted(ep, dir, &p)) {
				if (cw_ct_open(&fwd, epoch, v.rule, 0, CW_CT_REVOKED)) {
					cw_count(CW_CNT_REVOKED);
					if (visible)
						cw_emit(&p, dir, CW_EV_REVOKE, ep->ep_id, v.peer, v.rule);
				}
				return TC_ACT_SHOT;
			}
			/* rp: reversed above, looking up the reverse conntrack key. */
			struct cw_verdict r;
			cw_decide_cached(slot, epoch, ep, dir ^ 1, &rp, 0, &r);
			if (r.allow)
				return TC_ACT_OK;
		}
		cw_count(CW_CNT_DENIED);
		cw_hit(v.rule);
		if (visible)
			cw_emit(&p, dir, CW_EV_DENY, ep->ep_id, v.peer, v.rule);
		return TC_ACT_SHOT; /* silent: no RST, no ICMP */
	}
	/* A TCP connection whose replies cross a direction that polices nothing needs no
	 * conntrack entry: its segments pass on the verdict cache (or the tries), its replies
	 * pass unpoliced. Its pair is recorded instead, which is what revokes it (cw_admitted);
	 * that spares the SYN's write to a cold conntrack bucket, the largest cost per connection
	 * (docs/benchmarks.md). A later segment of such a connection lands here when this CPU's
	 * cache does not hold the pair (a new epoch, another CPU): it passes, and is not reported
	 * again as a new connection. Only a SYN records the pair: a segment admitted here may
	 * also be a reply of a connection the endpoint opened before it was tracked, and
	 * recording its pair would have that connection cut as revoked when this direction stops
	 * admitting the peer (its replies must pass: the endpoint opened it). */
	if (p.proto == IPPROTO_TCP && !opposite) {
		if (!syn) {
			cw_count(CW_CNT_CT_HIT);
			return TC_ACT_OK;
		}
		cw_record_admission(ep, dir, &p, epoch, &v);
	} else {
		/* Reopen: a SYN on a reused tuple (never looked up above), or a flow that raced in. */
		if (syn)
			cw_ct_key_of(&fwd, &p, ep->ep_id, dir);
		cw_ct_open(&fwd, epoch, v.rule, 1, 0);
	}
	cw_count(CW_CNT_ALLOWED);
	cw_hit(v.rule);
	if (!v.audit_allow) {
		cw_count(CW_CNT_AUDIT);
		cw_hit(v.audit_rule);
		if (visible)
			cw_emit(&p, dir, CW_EV_AUDIT, ep->ep_id, v.peer, v.audit_rule);
	} else if (visible) {
		cw_emit(&p, dir, CW_EV_ALLOW, ep->ep_id, v.peer, v.rule);
	}
	return TC_ACT_OK;
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	return handle(skb, CW_DIR_EGRESS, 1);
}

/* from_pod's place on a host's NIC (host mode): what leaves the NIC. */
SEC("classifier")
int from_host(struct __sk_buff *skb)
{
	return handle(skb, CW_DIR_EGRESS, 0);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	return handle(skb, CW_DIR_INGRESS, 0);
}
