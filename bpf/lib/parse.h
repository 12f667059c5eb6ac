/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* Packet parsing into addresses (v4-mapped), protocol and ports. */
#ifndef CELLWALL_PARSE_H
#define CELLWALL_PARSE_H

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

struct cw_pkt {
	__u8 saddr[16] __attribute__((aligned(8))); /* read as words by the verdict cache */
	__u8 daddr[16];
	__u16 sport; /* network order; 0 when the protocol has no ports */
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
};

static __always_inline void cw_v4_mapped(__u8 *out, __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
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
