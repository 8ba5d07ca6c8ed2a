// SPDX-License-Identifier: GPL-2.0
/*
 * NAT64 lookup for applications:
 *   struct toa_nat64_peer peer; socklen_t len = sizeof(peer);
 *   getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP, &peer, &len);
 * ip_getsockopt() hands option numbers it does not know to netfilter's sockopt registry;
 * IPv6 (dual-stack) sockets reach the same place for level IPPROTO_IP. The registry holds
 * a reference on this module while the handler runs, so unload cannot race with it.
 */
#define pr_fmt(fmt) "toa: " fmt

#include <linux/module.h>
#include <linux/netfilter.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include "toa.h"

static int toa_sockopt_get(struct sock *sk, int optval, void __user *user, int *len)
{
	struct toa_nat64_peer peer;
	struct toa_addr toa;

	if (optval != TOA_SO_GET_LOOKUP)
		return -ENOPROTOOPT;
	if (*len < (int)sizeof(peer))
		return -EINVAL;
	if (!toa_table_lookup(sk, &toa) || toa.type != TOA_TYPE_NAT64) {
		toa_count(TOA_CNT_GETSOCKOPT_EMPTY);
		return -ENOENT;
	}
	memset(&peer, 0, sizeof(peer));	/* no stack bytes in the padding */
	memcpy(&peer.saddr, toa.addr, sizeof(peer.saddr));
	peer.sport = htons(toa.port);
	if (copy_to_user(user, &peer, sizeof(peer)))
		return -EFAULT;
	*len = sizeof(peer);
	toa_count(TOA_CNT_GETSOCKOPT_OK);
	return 0;
}

static struct nf_sockopt_ops toa_sockopt_ops = {
	.pf = PF_INET,
	/* Ranges are [min, max): only TOA_SO_GET_LOOKUP, no set options. */
	.get_optmin = TOA_SO_GET_LOOKUP,
	.get_optmax = TOA_SO_GET_LOOKUP + 1,
	.get = toa_sockopt_get,
	.owner = THIS_MODULE,
};

int toa_sockopt_register(void)
{
	int err = nf_register_sockopt(&toa_sockopt_ops);

	if (err == -EBUSY)
		pr_err("TOA: sockopt %d already registered (another TOA module loaded?)\n",
		       TOA_SO_GET_LOOKUP);
	else if (err)
		pr_err("cannot register sockopt %d (error %d)\n", TOA_SO_GET_LOOKUP, err);
	return err;
}

void toa_sockopt_unregister(void)
{
	nf_unregister_sockopt(&toa_sockopt_ops);
}
