// SPDX-License-Identifier: GPL-2.0
/*
 * /proc/net/toa_stats and /proc/net/toa_table, in the initial network namespace (node
 * agents read them through the host's /proc/1/net/).
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

static int toa_table_seq_show(struct seq_file *m, void *v)
{
	toa_table_show(m);
	return 0;
}

int toa_proc_init(void)
{
	if (!proc_create_single("toa_stats", 0444, init_net.proc_net, toa_stats_seq_show))
		goto fail;
	if (!proc_create_single("toa_table", 0444, init_net.proc_net, toa_table_seq_show)) {
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
	remove_proc_entry("toa_table", init_net.proc_net);
	remove_proc_entry("toa_stats", init_net.proc_net);
}
