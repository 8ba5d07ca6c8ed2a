// SPDX-License-Identifier: GPL-2.0
/*
 * toa: TCP Option Address.
 *
 * A layer-4 balancer that rewrites the client address (SNAT, NAT64) puts the real client
 * address in a TCP option of the handshake. This module reads it and makes accept() and
 * getpeername() return the real IPv4 client, and answers getsockopt(IPPROTO_IP, 4096) with
 * the real IPv6 client of NAT64 connections. See README.md.
 */
#define pr_fmt(fmt) "toa: " fmt

#include <linux/init.h>
#include <linux/module.h>
#include <linux/rcupdate.h>
#include "toa.h"

static int __init toa_init(void)
{
	int err;

	/*
	 * The sockopt first: when another TOA module is loaded it already owns 4096, and this
	 * load stops here with -EBUSY before creating anything (its /proc/net/toa_* names
	 * would collide too).
	 */
	toa_table_init();
	err = toa_sockopt_register();
	if (err)
		return err;
	err = toa_pending_init();
	if (err)
		goto out_sockopt;
	err = toa_table_sweep_init();
	if (err)
		goto out_pending;
	err = toa_proc_init();
	if (err)
		goto out_sweep;
	/* Last: from here on connections get entries. */
	err = toa_hooks_register();
	if (err)
		goto out_proc;
	pr_info("toa load success\n");
	return 0;

out_proc:
	/*
	 * The probes registered before the failing one may already have fired: free what
	 * they stored (toa_hooks_register unregistered them, so nothing adds any more).
	 */
	synchronize_rcu();
	toa_proc_exit();
out_sweep:
	toa_table_sweep_exit();
	toa_table_flush();
	toa_table_net_unregister();
out_pending:
	toa_pending_exit();
out_sockopt:
	toa_sockopt_unregister();
	/* Entries go through kfree_rcu: let those finish before the module text goes. */
	rcu_barrier();
	return err;
}

static void __exit toa_exit(void)
{
	unsigned int freed;

	/*
	 * The sockopt first: while a module is being unloaded, netfilter's sockopt lookup
	 * fails (ENOPROTOOPT) every IPv4 get/setsockopt that reaches a range it registered,
	 * including other users' (SO_ORIGINAL_DST, iptables-legacy, ipvsadm) when they are
	 * looked up behind ours. Unregistering it first keeps that window to this call only,
	 * instead of the whole probe removal (several grace periods).
	 */
	toa_sockopt_unregister();
	/* No hook or handler runs after this, so nothing adds or reads entries from here on. */
	toa_hooks_unregister();
	/* Readers that started before (proc files) are done after a grace period. */
	synchronize_rcu();
	toa_table_sweep_exit();
	freed = toa_table_flush();
	toa_table_net_unregister();
	toa_pending_exit();
	toa_proc_exit();
	/* Entries go through kfree_rcu: let those finish before the module text goes. */
	rcu_barrier();
	pr_info("TOA unloaded (%u entries of live sockets freed)\n", freed);
}

module_init(toa_init);
module_exit(toa_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("TCP Option Address: real client address for SNAT and NAT64 balancers");
MODULE_AUTHOR("toa-operator");
MODULE_VERSION("0.1.0");
