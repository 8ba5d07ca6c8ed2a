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

/*
 * Fills *tuple from the segment (received by @listener) and returns 1 with *toa set when
 * the segment carries a valid TOA option from a trusted source, 0 when it carries none (or
 * an untrusted one), -EINVAL when it is not a well-formed IPv4/TCP segment (*tuple not
 * set). Counts malformed options and untrusted TOA.
 */
int toa_skb_find_v4(const struct sock *listener, const struct sk_buff *skb,
		    struct toa_tuple *tuple, struct toa_addr *toa)
{
	const struct toa_config *cfg;
	struct toa_parse_result res;
	const struct iphdr *iph;
	const struct tcphdr *th = toa_skb_headers_v4(skb, &iph);
	bool found, trusted;

	if (!th)
		return -EINVAL;
	toa_fill_tuple(listener, iph, th, tuple);

	rcu_read_lock();
	cfg = rcu_dereference(toa_cfg);
	found = toa_parse_options((const u8 *)(th + 1), th->doff * 4 - sizeof(*th),
				  &cfg->kinds, &res);
	trusted = !found || toa_config_trusted_v4(cfg, iph->saddr);
	rcu_read_unlock();

	if (res.malformed)
		toa_count_n(TOA_CNT_TOA_MALFORMED, res.malformed);
	if (!found)
		return 0;
	if (!trusted) {
		toa_count(TOA_CNT_TOA_UNTRUSTED);
		pr_debug("toa: untrusted TOA from %pI4:%u ignored\n", &iph->saddr,
			 ntohs(th->source));
		return 0;
	}
	*toa = res.toa;
	return 1;
}
