// SPDX-License-Identifier: GPL-2.0
/*
 * /proc/net/toa_stats in the initial network namespace (node agents read it through the
 * host's /proc/1/net/), and /proc/net/toa_table in every network namespace, each listing
 * only its own namespace's connections, readable by root only.
 */
#include <linux/printk.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>
#include "toa.h"

static int toa_stats_seq_show(struct seq_file *m, void *v)
{
	toa_stats_show(m);
	return 0;
}

static int __net_init toa_proc_net_init(struct net *net)
{
	return toa_table_proc_create(net) ? 0 : -ENOMEM;
}

static void __net_exit toa_proc_net_exit(struct net *net)
{
	remove_proc_entry("toa_table", net->proc_net);
}

static struct pernet_operations toa_proc_net_ops = {
	.init = toa_proc_net_init,
	.exit = toa_proc_net_exit,
};

int toa_proc_init(void)
{
	if (!proc_create_single("toa_stats", 0444, init_net.proc_net, toa_stats_seq_show))
		goto fail;
	if (register_pernet_subsys(&toa_proc_net_ops)) {
		remove_proc_entry("toa_stats", init_net.proc_net);
		goto fail;
	}
	return 0;
fail:
	pr_err("toa: cannot create /proc/net/toa_stats and toa_table (out of memory, or the names are taken by another TOA module)\n");
	return -ENOMEM;
}

void toa_proc_exit(void)
{
	unregister_pernet_subsys(&toa_proc_net_ops);
	remove_proc_entry("toa_stats", init_net.proc_net);
}
