// SPDX-License-Identifier: GPL-2.0
/*
 * Received IPv4 TCP segments: locate their headers (bounds-checked, linear or not), parse
 * the options with the configured kinds, apply the scope and trust rules, and keep a
 * usable TOA in the pending table until the handshake's child socket takes it.
 *
 * toa_skb_nf_local_in() is the netfilter LOCAL_IN hook of every network namespace
 * (toa_hooks.c), before TCP sees the segment: unlike a kprobe it cannot be skipped.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/rcupdate.h>
#include <linux/skbuff.h>
#include <linux/netfilter.h>
#include <linux/tcp.h>
#include <linux/ipv6.h>
#include <net/addrconf.h>
#include <net/inet_hashtables.h>
#include <net/inet6_hashtables.h>
#include <net/ipv6.h>
#include <net/ip.h>
#include <net/route.h>
#include <net/sock.h>
#include <net/tcp.h>
#include "toa.h"

/*
 * The IPv4 and TCP headers of @skb (copied to @buf only where the skb is not linear) and
 * the segment located in them; NULL when it is not an IPv4 TCP segment with complete
 * headers. Only the headers are copied: the IPv4 header's protocol and length and the
 * TCP header's data offset are read first (other protocols stop there), and
 * toa_locate_v4() then checks every length against the bytes actually taken.
 */
static const u8 *toa_skb_seg(const struct sk_buff *skb, u8 *buf, struct toa_seg_v4 *seg)
{
	int off = skb_network_offset(skb);
	int avail = (int)skb->len - off, need;
	const struct iphdr *iph;
	const struct tcphdr *th;
	struct iphdr _iph;
	struct tcphdr _th;
	const u8 *p;

	if (skb->protocol != htons(ETH_P_IP) || avail < (int)sizeof(_iph))
		return NULL;
	iph = skb_header_pointer(skb, off, sizeof(_iph), &_iph);
	if (!iph || iph->protocol != IPPROTO_TCP || iph->ihl < 5)
		return NULL;
	th = skb_header_pointer(skb, off + iph->ihl * 4, sizeof(_th), &_th);
	if (!th)
		return NULL;
	need = min_t(int, avail, iph->ihl * 4 + th->doff * 4);
	p = skb_header_pointer(skb, off, need, buf);
	if (!p || toa_locate_v4(p, need, seg))
		return NULL;
	return p;
}

static void toa_seg_tuple(const struct net *net, const struct toa_seg_v4 *seg,
			  struct toa_tuple *t)
{
	__be32 a;

	t->net = net;
	memcpy(&a, seg->saddr, 4);
	ipv6_addr_set_v4mapped(a, &t->raddr);
	memcpy(&a, seg->daddr, 4);
	ipv6_addr_set_v4mapped(a, &t->laddr);
	t->rport = htons(seg->sport);
	t->lport = htons(seg->dport);
}

/*
 * The established-table entry of a connection (IPv4 or IPv6, from the tuple), with a
 * reference (sock_gen_put() it): a full socket, a TIME_WAIT socket or a request socket
 * (TCP_NEW_SYN_RECV), or NULL. The caller holds rcu_read_lock(). Kernels since 2025 have
 * one TCP hash table per namespace reachable from the namespace itself and dropped the
 * table argument (the build detects which for each family, see Kbuild).
 */
struct sock *toa_ehash_lookup(struct net *net, const struct toa_tuple *t, int dif, int sdif)
{
	if (toa_tuple_is_v4(t)) {
		__be32 raddr = t->raddr.s6_addr32[3], laddr = t->laddr.s6_addr32[3];

#ifdef TOA_EHASH_NO_HASHINFO
		return __inet_lookup_established(net, raddr, t->rport, laddr, ntohs(t->lport),
						 dif, sdif);
#else
		return __inet_lookup_established(net, net->ipv4.tcp_death_row.hashinfo, raddr,
						 t->rport, laddr, ntohs(t->lport), dif, sdif);
#endif
	}
#ifdef TOA_EHASH6_NO_HASHINFO
	return __inet6_lookup_established(net, &t->raddr, t->rport, &t->laddr, ntohs(t->lport),
					  dif, sdif);
#else
	return __inet6_lookup_established(net, net->ipv4.tcp_death_row.hashinfo, &t->raddr,
					  t->rport, &t->laddr, ntohs(t->lport), dif, sdif);
#endif
}

/*
 * An ACK whose connection already has a full socket (established, or a TCP Fast Open
 * child made from the SYN) or is in TIME_WAIT: a later segment, whose TOA is ignored.
 * A request socket (the handshake in progress) or nothing (SYN cookies) is not.
 */
static bool toa_after_handshake(struct net *net, int dif, int sdif, const struct toa_tuple *t)
{
	struct sock *sk = toa_ehash_lookup(net, t, dif, sdif);
	bool later;

	if (!sk)
		return false;
	later = sk->sk_state != TCP_NEW_SYN_RECV;
	sock_gen_put(sk);
	return later;
}

/* The option the configured dup_rule picks; false when the segment is ambiguous. */
static bool toa_pick(const struct toa_config *cfg, const struct toa_parse_result *res,
		     struct toa_addr *toa)
{
	if (!res->duplicates) {
		*toa = res->toa;
		return true;
	}
	switch (cfg->dup_rule) {
	case TOA_DUP_FIRST:
		*toa = res->toa;
		return true;
	case TOA_DUP_LAST:
		*toa = res->last;
		return true;
	default:
		return false;
	}
}

/*
 * A decoded address that cannot be a real client: special ranges (toa_addr_check), or an
 * address of this host in the receiving namespace (IPv4: one FIB lookup; IPv6: the
 * namespace's address list), checked only for segments that carry a trusted TOA.
 */
static bool toa_addr_refused(struct net *net, const struct toa_addr *toa)
{
	struct in6_addr v6;
	__be32 v4;

	if (toa_addr_check(toa) != TOA_ADDR_OK)
		return true;
	if (toa->type == TOA_TYPE_NAT64) {
		memcpy(&v6, toa->addr, sizeof(v6));
		return ipv6_chk_addr(net, &v6, NULL, 0);
	}
	memcpy(&v4, toa->addr, 4);
	return inet_addr_type(net, v4) == RTN_LOCAL;
}

/*
 * One received segment (netfilter LOCAL_IN, namespace @net), located already (@p, @seg:
 * the option bytes at p + seg->opt_off, @tuple: its connection). Only a SYN (without ACK)
 * and an ACK that belongs to a handshake in progress are looked at; TOA on any other
 * segment is ignored. In order: a local port outside `ports` is not parsed at all; a
 * segment without TOA and without malformed options stops here (the cost for ordinary
 * traffic on ports in scope: one option walk); an ACK of a connection that already has
 * its full socket stops here uncounted; then malformed options are counted; a valid TOA
 * from a source that is not trusted counts toa_untrusted; several valid TOA options that
 * dup_rule does not resolve count toa_ambiguous; an address that cannot be a client
 * counts toa_refused_address. Each refused segment counts once. What is left is stored
 * in the pending table: a SYN's (syn_pending_stored) or an ACK's (ack_pending_stored,
 * replacing the SYN's: the ACK's option wins). The rules are the same for IPv4 and IPv6
 * transport; only the trust list entries of the transport's family can match.
 */
static void toa_seg_inspect(struct net *net, int dif, int sdif, const u8 *p,
			    const struct toa_seg_v4 *seg, const struct toa_tuple *tuple)
{
	enum toa_counter refused = TOA_CNT_MAX;
	const struct toa_config *cfg;
	struct toa_parse_result res;
	struct toa_addr toa;
	bool syn, found, trusted;

	if (seg->flags & TOA_TCP_RST)
		return;
	syn = seg->flags & TOA_TCP_SYN;
	if (syn ? (seg->flags & TOA_TCP_ACK) : !(seg->flags & TOA_TCP_ACK))
		return;

	rcu_read_lock();
	cfg = rcu_dereference(toa_cfg);
	if (!toa_config_port_in_scope(cfg, tuple->lport)) {
		rcu_read_unlock();
		return;
	}
	found = toa_parse_options(p + seg->opt_off, seg->opt_len, &cfg->kinds, &res);
	if ((!found && !res.malformed) || (!syn && toa_after_handshake(net, dif, sdif, tuple))) {
		rcu_read_unlock();
		goto no_toa;
	}
	if (found) {
		if (toa_tuple_is_v4(tuple))
			trusted = toa_config_trusted_v4(cfg, tuple->raddr.s6_addr32[3]);
		else
			trusted = toa_config_trusted_v6(cfg, &tuple->raddr);
		if (!trusted)
			refused = TOA_CNT_TOA_UNTRUSTED;
		else if (!toa_pick(cfg, &res, &toa))
			refused = TOA_CNT_TOA_AMBIGUOUS;
	}
	rcu_read_unlock();

	if (res.malformed)
		toa_count_n(TOA_CNT_TOA_MALFORMED, res.malformed);
	if (!found)
		goto no_toa;
	if (refused == TOA_CNT_MAX && toa_addr_refused(net, &toa))
		refused = TOA_CNT_TOA_REFUSED_ADDRESS;
	if (refused != TOA_CNT_MAX) {
		toa_count(refused);
		pr_debug("toa: TOA from [%pI6c]:%u refused (counter %d)\n", &tuple->raddr,
			 ntohs(tuple->rport), refused);
		goto no_toa;
	}
	if (toa_pending_store(tuple, &toa, seg->seq, syn)) {
		toa_count(syn ? TOA_CNT_SYN_PENDING_STORED : TOA_CNT_ACK_PENDING_STORED);
		pr_debug("toa: %s [%pI6c]:%u -> [%pI6c]:%u carries TOA kind %u\n",
			 syn ? "SYN" : "ACK", &tuple->raddr, ntohs(tuple->rport), &tuple->laddr,
			 ntohs(tuple->lport), toa.kind);
	}
	return;

no_toa:
	/*
	 * A SYN without a usable TOA starts a new handshake on this 4-tuple: an entry left
	 * by an earlier connection on it (one whose child was never created) must not be
	 * taken by this one. (Cheap: nothing to do while the table is empty.)
	 */
	if (syn && !toa_pending_empty())
		toa_pending_remove(tuple);
}

/* An IPv4 segment that needs a closer look (see toa_skb_nf_local_in). */
static noinline void toa_skb_inspect_slow(struct net *net, struct sk_buff *skb)
{
	struct toa_seg_v4 seg;
	struct toa_tuple tuple;
	u8 buf[TOA_SEG_MAX];
	const u8 *p;

	p = toa_skb_seg(skb, buf, &seg);
	if (!p)
		return;
	toa_seg_tuple(net, &seg, &tuple);
	toa_seg_inspect(net, inet_iif(skb), inet_sdif(skb), p, &seg, &tuple);
}

/*
 * The fast decision both LOCAL_IN hooks share: whether a TCP header whose first @linear
 * bytes (at least sizeof(*th)) lie in the linear area may carry or complete a TOA. False
 * means nothing to look at; true means the hook's slow path reads the segment with copies
 * (also when the one option word needed here is not linear).
 */
static inline bool toa_tcp_may_matter(const struct tcphdr *th, unsigned int linear)
{
	const __be32 *opt;

	/* a reset, a SYN-ACK (this host's own connection), no ACK, an ACK without options */
	if (th->rst || (th->syn ? th->ack : !th->ack) || (!th->syn && th->doff <= 5))
		return false;
	/*
	 * An ACK whose only option is the aligned timestamp (NOP, NOP, TS: what nearly every
	 * segment of an established connection carries, tested the way
	 * tcp_parse_aligned_timestamp() does): no room for a TOA, nothing malformed.
	 */
	if (!th->syn && th->doff == 8) {
		if (linear < sizeof(*th) + sizeof(*opt))
			return true;
		opt = (const __be32 *)(th + 1);
		if (*opt == htonl((TCPOPT_NOP << 24) | (TCPOPT_NOP << 16) |
				  (TCPOPT_TIMESTAMP << 8) | TCPOLEN_TIMESTAMP))
			return false;
	}
	/* a SYN without options while nothing is pending: nothing to store or remove */
	return !(th->syn && th->doff <= 5 && toa_pending_empty());
}

/*
 * The netfilter LOCAL_IN hook (registered by toa_hooks.c), which never drops anything.
 * Most segments are not looked at beyond their flags, so that decision
 * is taken here without buffers or copies, from the linear area (at LOCAL_IN the IPv4
 * header always is, the TCP header nearly always); when the TCP header is not linear the
 * slow path decides with copies. Every byte read is checked against the linear area.
 */
unsigned int toa_skb_nf_local_in(void *priv, struct sk_buff *skb,
				 const struct nf_hook_state *state)
{
	unsigned int off = skb_network_offset(skb), head = skb_headlen(skb);
	const struct iphdr *iph;
	const struct tcphdr *th;

	if (skb_network_offset(skb) < 0 || head < off + sizeof(*iph))
		goto slow;
	iph = ip_hdr(skb);
	if (iph->protocol != IPPROTO_TCP || skb->protocol != htons(ETH_P_IP))
		return NF_ACCEPT;
	if (iph->ihl < 5 || head < off + iph->ihl * 4 + sizeof(*th))
		goto slow;
	th = (const struct tcphdr *)((const u8 *)iph + iph->ihl * 4);
	if (!toa_tcp_may_matter(th, head - off - iph->ihl * 4))
		return NF_ACCEPT;
slow:
	toa_skb_inspect_slow(state->net, skb);
	return NF_ACCEPT;
}

/*
 * IPv6 segments. Extension headers (hop-by-hop, routing, destination options, AH) are
 * skipped with ipv6_skip_exthdr(), every one bounds-checked by the kernel's walker; a
 * segment is parsed only when the header chain ends in TCP and it is not a later fragment
 * (those carry no TCP header; at LOCAL_IN with nf_defrag_ipv6 loaded fragments are
 * reassembled already, without it a first fragment is parsed only when its TCP header
 * with all options lies inside it). Then only the TCP header with its options is copied
 * (toa_locate_tcp() checks its lengths against the bytes taken and the payload length).
 */
static noinline void toa_skb_inspect6(struct net *net, struct sk_buff *skb)
{
	int off = skb_network_offset(skb), toff, need;
	const struct ipv6hdr *ip6;
	const struct tcphdr *th;
	struct toa_seg_v4 seg;
	struct toa_tuple tuple;
	struct ipv6hdr _ip6;
	struct tcphdr _th;
	u8 buf[TOA_SEG_MAX];
	__be16 frag_off;
	u32 tcp_len;
	const u8 *p;
	u8 nexthdr;

	if (off < 0 || skb->len < off + sizeof(_ip6))
		return;
	ip6 = skb_header_pointer(skb, off, sizeof(_ip6), &_ip6);
	/* IPv4-mapped addresses never come over IPv6 (the stack drops them): not ours */
	if (!ip6 || ip6->version != 6 || ipv6_addr_v4mapped(&ip6->saddr) ||
	    ipv6_addr_v4mapped(&ip6->daddr))
		return;
	nexthdr = ip6->nexthdr;
	toff = ipv6_skip_exthdr(skb, off + sizeof(_ip6), &nexthdr, &frag_off);
	if (toff < 0 || nexthdr != IPPROTO_TCP || (frag_off & htons(IP6_OFFSET)))
		return;
	/* TCP bytes: the payload length minus the extension headers, within the skb */
	if (toff - off - (int)sizeof(_ip6) > ntohs(ip6->payload_len))
		return;
	tcp_len = ntohs(ip6->payload_len) - (toff - off - sizeof(_ip6));
	th = skb_header_pointer(skb, toff, sizeof(_th), &_th);
	if (!th)
		return;
	/* the fast decisions of the IPv4 hook: resets, SYN-ACKs, bare ACKs */
	if (th->rst || (th->syn ? th->ack : !th->ack) || (!th->syn && th->doff <= 5))
		return;
	if (th->syn && th->doff <= 5 && toa_pending_empty())
		return;
	/* an ACK whose only option is the aligned timestamp (as in the IPv4 hook) */
	if (!th->syn && th->doff == 8) {
		const __be32 *opt;
		__be32 _opt;

		opt = skb_header_pointer(skb, toff + sizeof(_th), sizeof(_opt), &_opt);
		if (opt && *opt == htonl((TCPOPT_NOP << 24) | (TCPOPT_NOP << 16) |
					 (TCPOPT_TIMESTAMP << 8) | TCPOLEN_TIMESTAMP))
			return;
	}
	need = min_t(int, (int)skb->len - toff, th->doff * 4);
	p = skb_header_pointer(skb, toff, need, buf);
	if (!p || toa_locate_tcp(p, need, tcp_len, &seg))
		return;
	tuple.net = net;
	tuple.raddr = ip6->saddr;
	tuple.laddr = ip6->daddr;
	tuple.rport = htons(seg.sport);
	tuple.lport = htons(seg.dport);
	toa_seg_inspect(net, inet6_iif(skb), inet6_sdif(skb), p, &seg, &tuple);
}

/*
 * The netfilter IPv6 LOCAL_IN hook (toa_hooks.c), which never drops anything. As in the
 * IPv4 hook, the common case is decided from the linear area without copies: an IPv6
 * header followed directly by TCP (no extension headers), and the flags and the aligned
 * timestamp of the TCP header. Anything else (extension headers, headers not linear)
 * takes the slow path, which reads every byte through skb_header_pointer().
 */
unsigned int toa_skb_nf_local_in6(void *priv, struct sk_buff *skb,
				  const struct nf_hook_state *state)
{
	unsigned int off = skb_network_offset(skb), head = skb_headlen(skb);
	const struct ipv6hdr *ip6;
	const struct tcphdr *th;

	if (skb->protocol != htons(ETH_P_IPV6))
		return NF_ACCEPT;
	if (skb_network_offset(skb) < 0 || head < off + sizeof(*ip6))
		goto slow;
	ip6 = ipv6_hdr(skb);
	if (ip6->nexthdr != IPPROTO_TCP)
		goto slow;	/* extension headers, or another protocol */
	if (head < off + sizeof(*ip6) + sizeof(*th))
		goto slow;
	th = (const struct tcphdr *)(ip6 + 1);
	if (!toa_tcp_may_matter(th, head - off - sizeof(*ip6)))
		return NF_ACCEPT;
slow:
	toa_skb_inspect6(state->net, skb);
	return NF_ACCEPT;
}
