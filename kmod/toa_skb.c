// SPDX-License-Identifier: GPL-2.0
/*
 * Locate the TCP option bytes of a received IPv4 segment, parse them with the configured
 * kinds and apply the trusted-source filter.
 *
 * The hooks run after tcp_v4_rcv() has pulled the whole TCP header (th->doff * 4 bytes)
 * into the linear area, but this code does not rely on it: every pointer is checked
 * against the skb's linear data before a byte is read.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/rcupdate.h>
#include <linux/skbuff.h>
#include <linux/tcp.h>
#include <net/route.h>
#include <net/sock.h>
#include "toa.h"

/* Returns the TCP header when the IPv4 and TCP headers lie in the linear area. */
static const struct tcphdr *toa_skb_headers_v4(const struct sk_buff *skb,
					       const struct iphdr **iph_out)
{
	const unsigned char *lo = skb->head, *hi = skb_tail_pointer(skb);
	const struct iphdr *iph;
	const struct tcphdr *th;

	if (skb->protocol != htons(ETH_P_IP) || !skb_transport_header_was_set(skb))
		return NULL;
	iph = ip_hdr(skb);
	th = tcp_hdr(skb);
	if ((const unsigned char *)iph < lo || (const unsigned char *)(iph + 1) > hi ||
	    iph->version != 4 || iph->protocol != IPPROTO_TCP)
		return NULL;
	if ((const unsigned char *)th < lo || (const unsigned char *)(th + 1) > hi ||
	    th->doff < sizeof(*th) / 4 || (const unsigned char *)th + th->doff * 4 > hi)
		return NULL;
	*iph_out = iph;
	return th;
}

static void toa_fill_tuple(const struct sock *listener, const struct iphdr *iph,
			   const struct tcphdr *th, struct toa_tuple *t)
{
	t->net = sock_net(listener);
	t->raddr = iph->saddr;
	t->laddr = iph->daddr;
	t->rport = th->source;
	t->lport = th->dest;
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
 * A decoded address that cannot be a real client: special ranges (toa_addr_check), or,
 * for IPv4, an address of this host in the listener's namespace (one FIB lookup, only for
 * segments that carry a trusted TOA).
 */
static bool toa_addr_refused(const struct sock *listener, const struct toa_addr *toa)
{
	__be32 v4;

	if (toa_addr_check(toa) != TOA_ADDR_OK)
		return true;
	if (toa->type != TOA_TYPE_IPV4)
		return false;
	memcpy(&v4, toa->addr, 4);
	return inet_addr_type(sock_net(listener), v4) == RTN_LOCAL;
}

/*
 * Fills *tuple from the segment (received by @listener) and returns 1 with *toa set when
 * the segment carries a usable TOA option, 0 when it carries none or one that is refused,
 * -EINVAL when it is not a well-formed IPv4/TCP segment (*tuple not set).
 *
 * In order: a local port outside `ports` is not parsed at all; then malformed options are
 * counted; a valid TOA from a source that is not trusted counts toa_untrusted; several
 * valid TOA options that dup_rule does not resolve count toa_ambiguous; an address that
 * cannot be a client counts toa_refused_address. Each refused segment counts once.
 */
int toa_skb_find_v4(const struct sock *listener, const struct sk_buff *skb,
		    struct toa_tuple *tuple, struct toa_addr *toa)
{
	const struct toa_config *cfg;
	struct toa_parse_result res;
	const struct iphdr *iph;
	const struct tcphdr *th = toa_skb_headers_v4(skb, &iph);
	enum toa_counter refused = TOA_CNT_MAX;
	bool found;

	if (!th)
		return -EINVAL;
	toa_fill_tuple(listener, iph, th, tuple);

	rcu_read_lock();
	cfg = rcu_dereference(toa_cfg);
	if (!toa_config_port_in_scope(cfg, th->dest)) {
		rcu_read_unlock();
		return 0;
	}
	found = toa_parse_options((const u8 *)(th + 1), th->doff * 4 - sizeof(*th),
				  &cfg->kinds, &res);
	if (found) {
		if (!toa_config_trusted_v4(cfg, iph->saddr))
			refused = TOA_CNT_TOA_UNTRUSTED;
		else if (!toa_pick(cfg, &res, toa))
			refused = TOA_CNT_TOA_AMBIGUOUS;
	}
	rcu_read_unlock();

	if (res.malformed)
		toa_count_n(TOA_CNT_TOA_MALFORMED, res.malformed);
	if (!found)
		return 0;
	if (refused == TOA_CNT_MAX && toa_addr_refused(listener, toa))
		refused = TOA_CNT_TOA_REFUSED_ADDRESS;
	if (refused != TOA_CNT_MAX) {
		toa_count(refused);
		pr_debug("toa: TOA from %pI4:%u refused (counter %d)\n", &iph->saddr,
			 ntohs(th->source), refused);
		return 0;
	}
	return 1;
}
