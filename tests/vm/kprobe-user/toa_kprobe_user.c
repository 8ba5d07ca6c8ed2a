// SPDX-License-Identifier: GPL-2.0
/*
 * Test module only (built and loaded by tests/vm/kmod.sh, never shipped): another kprobe
 * user on the functions toa probes, like a BPF tracing agent on a node. Its handler on
 * inet_getname/inet6_getname spins for spin_us microseconds with interrupts enabled, so
 * that softirqs (a SYN's or final ACK's processing, a socket's last reference dropped by
 * a reset) run on that CPU while a kprobe handler is active: the kprobes they hit there
 * are skipped by the kernel's recursion guard (nmissed). The probes on
 * tcp_v4_syn_recv_sock and inet_sock_destruct only count, so that those functions are
 * probed twice too.
 */
#include <linux/delay.h>
#include <linux/kprobes.h>
#include <linux/module.h>

static unsigned int spin_us = 200;
module_param(spin_us, uint, 0644);
MODULE_PARM_DESC(spin_us, "microseconds the getname handler spins");

static atomic_long_t hits = ATOMIC_LONG_INIT(0);

static int toa_ku_spin(struct kprobe *p, struct pt_regs *regs)
{
	atomic_long_inc(&hits);
	udelay(READ_ONCE(spin_us));
	return 0;
}

static int toa_ku_count(struct kprobe *p, struct pt_regs *regs)
{
	atomic_long_inc(&hits);
	return 0;
}

static struct kprobe toa_ku_probes[] = {
	{ .symbol_name = "inet_getname", .pre_handler = toa_ku_spin },
	{ .symbol_name = "inet6_getname", .pre_handler = toa_ku_spin },
	{ .symbol_name = "tcp_v4_syn_recv_sock", .pre_handler = toa_ku_count },
	{ .symbol_name = "inet_sock_destruct", .pre_handler = toa_ku_count },
};

static struct kprobe *toa_ku_list[ARRAY_SIZE(toa_ku_probes)];

static int __init toa_ku_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_ku_probes); i++)
		toa_ku_list[i] = &toa_ku_probes[i];
	return register_kprobes(toa_ku_list, ARRAY_SIZE(toa_ku_list));
}

static void __exit toa_ku_exit(void)
{
	unsigned int i;

	unregister_kprobes(toa_ku_list, ARRAY_SIZE(toa_ku_list));
	for (i = 0; i < ARRAY_SIZE(toa_ku_probes); i++)
		pr_info("toa_kprobe_user: %s missed %lu\n", toa_ku_probes[i].symbol_name,
			toa_ku_probes[i].nmissed);
	pr_info("toa_kprobe_user: %ld hits\n", atomic_long_read(&hits));
}

module_init(toa_ku_init);
module_exit(toa_ku_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("toa test: a second kprobe user whose getname handler spins");
