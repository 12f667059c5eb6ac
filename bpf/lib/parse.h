/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* Packet parsing into addresses (v4-mapped), protocol and ports. */
#ifndef CELLWALL_PARSE_H
#define CELLWALL_PARSE_H

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

struct cw_pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* network order; 0 when the protocol has no ports */
	__u16 dport;
	__u8 proto;
};

static __always_inline void cw_v4_mapped(__u8 *out, __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

/* Returns 0 for IPv4/IPv6 packets (filled in), -1 for anything else. */
static __always_inline int cw_parse(struct __sk_buff *skb, struct cw_pkt *p)
{
	__u16 h_proto;
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &h_proto, 2) < 0)
		return -1;
	__u32 l4;
	__builtin_memset(p, 0, sizeof(*p));
	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		cw_v4_mapped(p->saddr, ip.saddr);
		cw_v4_mapped(p->daddr, ip.daddr);
		p->proto = ip.protocol;
		/* Non-first fragments carry no ports: they are decided as port 0. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
		l4 = ETH_HLEN + ip.ihl * 4;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		/* Extension headers are not walked: such packets are decided with that next-header
		 * value as protocol, which isolated endpoints deny. */
		p->proto = ip6.nexthdr;
		l4 = ETH_HLEN + sizeof(struct ipv6hdr);
	} else {
		return -1;
	}
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
			return 0;
		p->sport = ports[0];
		p->dport = ports[1];
	}
	return 0;
}

#endif
