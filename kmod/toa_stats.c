// SPDX-License-Identifier: GPL-2.0
/*
 * Per-cpu event counters. Each CPU increments its own copy without locking
 * (this_cpu_inc is safe in any context); readers print every possible CPU's copy.
 */
#include <linux/cpumask.h>
#include <linux/percpu.h>
#include <linux/seq_file.h>
#include "toa.h"

DEFINE_PER_CPU(struct toa_cpu_stats, toa_stats);

/* Names as printed in /proc/net/toa_stats; the first seven are a fixed contract. */
static const char *const toa_counter_names[TOA_CNT_MAX] = {
	[TOA_CNT_SYN_RECV_SOCK_TOA] = "syn_recv_sock_toa",
	[TOA_CNT_SYN_RECV_SOCK_NO_TOA] = "syn_recv_sock_no_toa",
	[TOA_CNT_GETNAME_TOA_OK] = "getname_toa_ok",
	[TOA_CNT_GETNAME_TOA_MISMATCH] = "getname_toa_mismatch",
	[TOA_CNT_GETNAME_TOA_EMPTY] = "getname_toa_empty",
	[TOA_CNT_IP6_ADDRESS_ALLOC] = "ip6_address_alloc",
	[TOA_CNT_IP6_ADDRESS_FREE] = "ip6_address_free",
	[TOA_CNT_IP4_ADDRESS_ALLOC] = "ip4_address_alloc",
	[TOA_CNT_IP4_ADDRESS_FREE] = "ip4_address_free",
	[TOA_CNT_TOA_UNTRUSTED] = "toa_untrusted",
	[TOA_CNT_TOA_MALFORMED] = "toa_malformed",
	[TOA_CNT_SYN_PENDING_STORED] = "syn_pending_stored",
	[TOA_CNT_SYN_PENDING_DROPPED] = "syn_pending_dropped",
	[TOA_CNT_GETSOCKOPT_OK] = "getsockopt_ok",
	[TOA_CNT_GETSOCKOPT_EMPTY] = "getsockopt_empty",
	[TOA_CNT_TOA_REFUSED_ADDRESS] = "toa_refused_address",
	[TOA_CNT_TOA_AMBIGUOUS] = "toa_ambiguous",
	[TOA_CNT_ACK_PENDING_STORED] = "ack_pending_stored",
	[TOA_CNT_ATTACH_FALLBACK] = "attach_fallback",
	[TOA_CNT_ENTRIES_RECLAIMED] = "entries_reclaimed",
};

void toa_stats_show(struct seq_file *m)
{
	char name[32];
	unsigned int i;
	int cpu;

	/* Header: one column per possible CPU, like /proc/interrupts. */
	seq_printf(m, "%-24s", "");
	for_each_possible_cpu(cpu) {
		snprintf(name, sizeof(name), "CPU%d", cpu);
		seq_printf(m, " %16s", name);
	}
	seq_putc(m, '\n');

	for (i = 0; i < TOA_CNT_MAX; i++) {
		snprintf(name, sizeof(name), "%s:", toa_counter_names[i]);
		seq_printf(m, "%-24s", name);
		for_each_possible_cpu(cpu)
			seq_printf(m, " %16llu", per_cpu(toa_stats, cpu).v[i]);
		seq_putc(m, '\n');
	}
	toa_hooks_show_missed(m);
}
