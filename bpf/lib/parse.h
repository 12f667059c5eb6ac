/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/*
 * Packet parsing into addresses (v4-mapped), protocol and ports. Owns no map: the parsed
 * packet (struct cw_pkt) is what every other header takes.
 */
#ifndef CELLWALL_PARSE_H
#define CELLWALL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#include "../abi.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* Addresses are 16 bytes (IPv4 v4-mapped) held as two words: written and read whole, they stay
 * two registers; as bytes, clang split them into pieces that every use put back together with
 * shifts (a third of the program's instructions). */
struct cw_pkt {
	__u64 saddr[2];
	__u64 daddr[2];
	__u16 sport; /* network order; 0 when the protocol has no ports */
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
};

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cw_v4_mapped assumes a little-endian target (bpfel)"
#endif

/* ::ffff:a.b.c.d from the address as loaded from the header (network order in memory). */
static __always_inline void cw_v4_mapped(__u64 *out, __u32 addr)
{
	out[0] = 0;
	out[1] = 0xffff0000ULL | ((__u64)addr << 32);
}

/* `p` as its connection's other direction carries it: addresses and ports swapped. */
static __always_inline void cw_reverse(struct cw_pkt *out, const struct cw_pkt *p)
{
	*out = *p;
	out->saddr[0] = p->daddr[0];
	out->saddr[1] = p->daddr[1];
	out->daddr[0] = p->saddr[0];
	out->daddr[1] = p->saddr[1];
	out->sport = p->dport;
	out->dport = p->sport;
}

/* The peer's address: the destination of what an endpoint sends, the source of what it gets. */
static __always_inline const __u64 *cw_peer_addr(const struct cw_pkt *p, __u8 dir)
{
	return dir == CW_DIR_EGRESS ? p->daddr : p->saddr;
}

#define CW_TCP_SYN 0x02
#define CW_TCP_ACK 0x10

/* Returns 0 for IPv4/IPv6 packets (filled in), -1 for anything else. Direct packet access: the
 * headers are in the linear part of the skb on every path Cellwall attaches to. */
static __always_inline int cw_parse(struct __sk_buff *skb, struct cw_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	void *l4;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return -1;
		cw_v4_mapped(p->saddr, ip->saddr);
		cw_v4_mapped(p->daddr, ip->daddr);
		p->proto = ip->protocol;
		p->sport = 0;
		p->dport = 0;
		p->tcp_flags = 0;
		/* Non-first fragments carry no ports: they are decided as port 0. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;
		__u32 hl = ip->ihl * 4;
		if (hl < sizeof(*ip))
			return -1;
		l4 = (void *)ip + hl;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		/* Extension headers are not walked: such packets are decided with that next-header
		 * value as protocol, which policed endpoints drop. */
		p->proto = ip6->nexthdr;
		p->sport = 0;
		p->dport = 0;
		p->tcp_flags = 0;
		l4 = (void *)(ip6 + 1);
	} else {
		return -1;
	}
	if (p->proto == IPPROTO_TCP) {
		__u8 *t = l4;
		if ((void *)(t + 14) > data_end)
			return 0;
		p->sport = *(__u16 *)t;
		p->dport = *(__u16 *)(t + 2);
		p->tcp_flags = t[13];
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		__u16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return 0;
		p->sport = ports[0];
		p->dport = ports[1];
	}
	return 0;
}

#endif
