// SPDX-License-Identifier: GPL-2.0
/*
 * Where the module attaches to the TCP stack.
 *
 * Packet side: a netfilter hook, registered in every network namespace (pernet
 * operations: the ones that exist at load and every later one). Netfilter hooks are
 * called for every packet and, unlike kprobes, are never skipped.
 *
 *  NF_INET_LOCAL_IN (IPv4)            every segment addressed to this host, after routing,
 *                                     reassembly and the nat table's SNAT (priority
 *                                     NF_IP_PRI_NAT_SRC + 1): the addresses and ports are
 *                                     the ones the socket will have, the source is the
 *                                     one that reaches the listener (trusted_sources), and
 *                                     segments the filter table drops never get here.
 *                                     SYNs and handshake ACKs with TOA go to the pending
 *                                     table (toa_skb.c). Dual-stack listeners receive IPv4
 *                                     through here too.
 *
 * Why not PRE_ROUTING: there a segment may still be forwarded elsewhere (a pod's traffic
 * through the host namespace, where it is parsed again in the pod's namespace), may be
 * DNATed afterwards (kube-proxy: the key would not be the socket's 4-tuple), or dropped
 * by the filter table; a SYN's option would then take the pending room of its namespace
 * for nothing.
 *
 * Socket side: kprobes and kretprobes (no writes to kernel text or read-only data, no
 * symbol-address lookups). Arguments and return values are read with
 * regs_get_kernel_argument()/regs_return_value(), so extra trailing arguments added by
 * newer kernels (tcp_v4_syn_recv_sock grew a 7th in 2026 stable kernels) do not matter,
 * and the code is the same on every architecture with HAVE_REGS_AND_STACK_ACCESS_API
 * (x86_64, arm64; tested on x86_64). A kprobe is skipped while another kprobe handler
 * runs on that CPU; each one here has a fallback:
 *
 *  tcp_v4_syn_recv_sock (kretprobe)   the handshake completes and the child socket is
 *                                     created (also TCP Fast Open, SYN cookies, and IPv4
 *                                     on dual-stack listeners via tcp_v6_syn_recv_sock).
 *                                     Return: the child takes the pending TOA of its
 *                                     4-tuple. Skipped: the first getname or getsockopt
 *                                     on the socket takes it.
 *  inet_getname, inet6_getname        peer address (getpeername, accept): rewrite the
 *  (kretprobes)                       address in the result when the socket has an IPv4
 *                                     entry (sockaddr_in, or ::ffff:a.b.c.d for AF_INET6).
 *                                     Not called from softirq, so never skipped by the
 *                                     recursion guard (only when all maxactive instances
 *                                     are in use).
 *  inet_sock_destruct (kprobe)        last reference of any inet socket (v4 and v6 via
 *                                     inet6_sock_destruct): free its entry. Skipped: the
 *                                     periodic sweep frees it (toa_table.c).
 */
#define pr_fmt(fmt) "toa: " fmt

#include <linux/errno.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6.h>
#include <linux/ptrace.h>
#include <net/inet_connection_sock.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/sock.h>
#include <net/tcp.h>
#include "toa.h"

/* ---- segments: netfilter, per network namespace ---- */

static const struct nf_hook_ops toa_nf_ops[] = {
	{
		.hook = toa_skb_nf_local_in,
		.pf = NFPROTO_IPV4,
		.hooknum = NF_INET_LOCAL_IN,
		.priority = NF_IP_PRI_NAT_SRC + 1,
	},
	{
		.hook = toa_skb_nf_local_in6,
		.pf = NFPROTO_IPV6,
		.hooknum = NF_INET_LOCAL_IN,
		.priority = NF_IP6_PRI_NAT_SRC + 1,
	},
};

static int __net_init toa_nf_net_init(struct net *net)
{
	return nf_register_net_hooks(net, toa_nf_ops, ARRAY_SIZE(toa_nf_ops));
}

static void __net_exit toa_nf_net_exit(struct net *net)
{
	nf_unregister_net_hooks(net, toa_nf_ops, ARRAY_SIZE(toa_nf_ops));
}

static struct pernet_operations toa_nf_net_ops = {
	.init = toa_nf_net_init,
	.exit = toa_nf_net_exit,
};

/* ---- final ACK: child socket ---- */

/* Floor of the syn_recv_sock kretprobe's instances (more on hosts with many CPUs). */
#define TOA_SYN_RECV_MAXACTIVE	256

/*
 * struct sock *tcp_v4_syn_recv_sock(const struct sock *sk, struct sk_buff *skb, ...)
 * returns the child, which has the connection's 4-tuple already. NULL: no child (e.g.
 * accept queue full); the pending entry stays for a retried ACK.
 */
static void toa_syn_recv_attach(const struct sock *child)
{
	struct toa_tuple tuple;
	struct toa_addr toa;

	/* Nothing pending anywhere (the common case): only the count. */
	if (!toa_pending_empty() && toa_table_attach(child, &tuple, &toa)) {
		toa_count(TOA_CNT_SYN_RECV_SOCK_TOA);
		if (toa.type == TOA_TYPE_NAT64)
			pr_debug("socket %p [%pI6c]:%u: NAT64 TOA [%pI6c]:%u\n", child,
				 &tuple.raddr, ntohs(tuple.rport), toa.addr, toa.port);
		else
			pr_debug("socket %p [%pI6c]:%u: IPv4 TOA %pI4:%u\n", child,
				 &tuple.raddr, ntohs(tuple.rport), toa.addr, toa.port);
	} else {
		toa_count(TOA_CNT_SYN_RECV_SOCK_NO_TOA);
	}
}

static int toa_syn_recv_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	const struct sock *child = (const struct sock *)regs_return_value(regs);

	if (child)
		toa_syn_recv_attach(child);
	return 0;
}

/*
 * struct sock *tcp_v6_syn_recv_sock(const struct sock *sk, struct sk_buff *skb, ...), the
 * same for IPv6 listeners. For an IPv4 connection on a dual-stack listener it calls
 * tcp_v4_syn_recv_sock(), whose probe attached and counted the child already: only
 * children of native IPv6 connections are handled here.
 */
static int toa_syn_recv6_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	const struct sock *child = (const struct sock *)regs_return_value(regs);

	if (child && !ipv6_addr_v4mapped(&child->sk_v6_daddr))
		toa_syn_recv_attach(child);
	return 0;
}

static struct kretprobe toa_krp_syn_recv = {
	.kp.symbol_name = "tcp_v4_syn_recv_sock",
	.handler = toa_syn_recv_ret,
	.maxactive = TOA_SYN_RECV_MAXACTIVE,
};

static struct kretprobe toa_krp_syn_recv6 = {
	.kp.symbol_name = "tcp_v6_syn_recv_sock",
	.handler = toa_syn_recv6_ret,
	.maxactive = TOA_SYN_RECV_MAXACTIVE,
};

/* ---- getpeername / accept ---- */

struct toa_getname_data {
	struct sockaddr *uaddr;
	struct toa_addr toa;
};

/*
 * Entry of inet_getname/inet6_getname(struct socket *sock, struct sockaddr *uaddr, int peer).
 * The socket's entry is looked up here, so the return handler (and the kretprobe return
 * trampoline) only runs for sockets whose entry is rewritten: an IPv4 entry always (an
 * AF_INET6 socket shows it as ::ffff:a.b.c.d), a NAT64 entry only on an AF_INET6 socket
 * of an IPv6 connection (@v6). An IPv4 connection keeps its IPv4 (or IPv4-mapped) peer
 * with a NAT64 entry, as before IPv6 transport was handled: applications there ask
 * getsockopt(4096). getsockname and sockets without TOA pay for one lookup only.
 */
static int toa_getname_entry_common(struct kretprobe_instance *ri, struct pt_regs *regs,
				    bool v6)
{
	struct toa_getname_data *d = (struct toa_getname_data *)ri->data;
	struct socket *sock;
	struct sock *sk;

	if (!(int)regs_get_kernel_argument(regs, 2))
		return 1;	/* getsockname: unchanged */
	sock = (struct socket *)regs_get_kernel_argument(regs, 0);
	sk = READ_ONCE(sock->sk);
	if (!sk || !toa_table_lookup(sk, &d->toa)) {
		/* Only TCP sockets can have an entry: UDP, raw and others are not counted. */
		if (sk && sk->sk_type == SOCK_STREAM && sk->sk_protocol == IPPROTO_TCP)
			toa_count(TOA_CNT_GETNAME_TOA_EMPTY);
		return 1;
	}
	if (d->toa.type != TOA_TYPE_IPV4 &&
	    (!v6 || ipv6_addr_v4mapped(&sk->sk_v6_daddr))) {
		/* An IPv4 connection: the NAT64 address is for getsockopt(4096) only. */
		toa_count(TOA_CNT_GETNAME_TOA_MISMATCH);
		return 1;
	}
	d->uaddr = (struct sockaddr *)regs_get_kernel_argument(regs, 1);
	return 0;
}

static int toa_getname_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return toa_getname_entry_common(ri, regs, false);
}

static int toa_getname6_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return toa_getname_entry_common(ri, regs, true);
}

static int toa_getname_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_getname_data *d = (struct toa_getname_data *)ri->data;
	struct sockaddr_in *sin = (struct sockaddr_in *)d->uaddr;

	/* A failed call (e.g. ENOTCONN) copies nothing to the caller. */
	if ((int)regs_return_value(regs) < 0 || sin->sin_family != AF_INET)
		return 0;
#ifdef TOA_TEST_NO_GETNAME_REWRITE
	/*
	 * Test builds only (KCFLAGS=-DTOA_TEST_NO_GETNAME_REWRITE): a probe that fires but does
	 * not act, as when the probed function was inlined or cloned, so that the agent's
	 * self-test can be shown to catch it (tests/vm/agent-guest/suite.sh).
	 */
	return 0;
#endif
	sin->sin_port = htons(d->toa.port);
	memcpy(&sin->sin_addr.s_addr, d->toa.addr, 4);
	toa_count(TOA_CNT_GETNAME_TOA_OK);
	return 0;
}

/*
 * AF_INET6 sockets: an IPv4 entry as ::ffff:a.b.c.d, a NAT64 entry as the IPv6 address
 * itself (no scope: the real client is not on one of this host's links).
 */
static int toa_getname6_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_getname_data *d = (struct toa_getname_data *)ri->data;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)d->uaddr;
	__be32 v4;

	if ((int)regs_return_value(regs) < 0 || sin6->sin6_family != AF_INET6)
		return 0;
	sin6->sin6_port = htons(d->toa.port);
	if (d->toa.type == TOA_TYPE_NAT64) {
		memcpy(&sin6->sin6_addr, d->toa.addr, sizeof(sin6->sin6_addr));
		sin6->sin6_scope_id = 0;
	} else {
		memcpy(&v4, d->toa.addr, 4);
		ipv6_addr_set_v4mapped(v4, &sin6->sin6_addr);
	}
	toa_count(TOA_CNT_GETNAME_TOA_OK);
	return 0;
}

/*
 * getpeername may sleep inside (lock_sock for BPF hooks): allow many in flight. The real
 * value is set at registration from the CPU count (toa_maxactive), never below the
 * kernel's own default of 2 per possible CPU.
 */
#define TOA_GETNAME_MAXACTIVE	1024

static struct kretprobe toa_krp_getname = {
	.kp.symbol_name = "inet_getname",
	.entry_handler = toa_getname_entry,
	.handler = toa_getname_ret,
	.data_size = sizeof(struct toa_getname_data),
	.maxactive = TOA_GETNAME_MAXACTIVE,
};

static struct kretprobe toa_krp_getname6 = {
	.kp.symbol_name = "inet6_getname",
	.entry_handler = toa_getname6_entry,
	.handler = toa_getname6_ret,
	.data_size = sizeof(struct toa_getname_data),
	.maxactive = TOA_GETNAME_MAXACTIVE,
};

/* ---- socket destruction ---- */

static int toa_destruct_pre(struct kprobe *p, struct pt_regs *regs)
{
	/* void inet_sock_destruct(struct sock *sk) */
	toa_table_forget((const struct sock *)regs_get_kernel_argument(regs, 0));
	return 0;
}

static struct kprobe toa_kp_destruct = {
	.symbol_name = "inet_sock_destruct",
	.pre_handler = toa_destruct_pre,
};

/* ---- registration ---- */

/*
 * Registration order: the free path first and the producers last, so an entry is never
 * created while the hook that frees it is missing. Unregistration runs in reverse.
 */
enum { TOA_HOOK_KPROBE, TOA_HOOK_KRETPROBE };

static const struct {
	int type;
	void *probe;
} toa_hooks[] = {
	{ TOA_HOOK_KPROBE, &toa_kp_destruct },
	{ TOA_HOOK_KRETPROBE, &toa_krp_getname },
	{ TOA_HOOK_KRETPROBE, &toa_krp_getname6 },
	{ TOA_HOOK_KRETPROBE, &toa_krp_syn_recv },
	{ TOA_HOOK_KRETPROBE, &toa_krp_syn_recv6 },
};

static const char *toa_hook_symbol(unsigned int i)
{
	if (toa_hooks[i].type == TOA_HOOK_KPROBE)
		return ((struct kprobe *)toa_hooks[i].probe)->symbol_name;
	return ((struct kretprobe *)toa_hooks[i].probe)->kp.symbol_name;
}

/*
 * Calls the probe machinery skipped: a kprobe's nmissed counts hits while another kprobe
 * handler ran on that CPU (recursion guard); a kretprobe adds the calls whose return
 * handler could not run because all maxactive instances were in use.
 */
static unsigned long toa_hook_missed(unsigned int i)
{
	if (toa_hooks[i].type == TOA_HOOK_KPROBE)
		return READ_ONCE(((struct kprobe *)toa_hooks[i].probe)->nmissed);
	return READ_ONCE(((struct kretprobe *)toa_hooks[i].probe)->kp.nmissed) +
	       (unsigned long)READ_ONCE(((struct kretprobe *)toa_hooks[i].probe)->nmissed);
}

/*
 * One line per probe in /proc/net/toa_stats: `missed_<function>:`, the total in the first
 * CPU column (the kernel keeps one count per probe, not per CPU) and 0 in the others, so
 * the file keeps its shape and a sum over the columns is the total.
 */
void toa_hooks_show_missed(struct seq_file *m)
{
	char name[48];
	unsigned int i;
	bool first;
	int cpu;

	for (i = 0; i < ARRAY_SIZE(toa_hooks); i++) {
		snprintf(name, sizeof(name), "missed_%s:", toa_hook_symbol(i));
		seq_printf(m, "%-24s", name);
		first = true;
		for_each_possible_cpu(cpu) {
			seq_printf(m, " %16lu", first ? toa_hook_missed(i) : 0UL);
			first = false;
		}
		seq_putc(m, '\n');
	}
}

static void toa_hooks_unregister_first(unsigned int n)
{
	while (n--) {
		if (toa_hooks[n].type == TOA_HOOK_KPROBE)
			unregister_kprobe(toa_hooks[n].probe);
		else
			unregister_kretprobe(toa_hooks[n].probe);
		if (toa_hook_missed(n))
			pr_info("probe on %s missed %lu calls\n", toa_hook_symbol(n),
				toa_hook_missed(n));
	}
}

/* At least 2 instances per possible CPU (the kernel's default), and the floor given. */
static int toa_maxactive(int floor)
{
	return max_t(int, floor, 2 * num_possible_cpus());
}

int toa_hooks_register(void)
{
	unsigned int i;
	int err;

	toa_krp_getname.maxactive = toa_maxactive(TOA_GETNAME_MAXACTIVE);
	toa_krp_getname6.maxactive = toa_maxactive(TOA_GETNAME_MAXACTIVE);
	toa_krp_syn_recv.maxactive = toa_maxactive(TOA_SYN_RECV_MAXACTIVE);
	toa_krp_syn_recv6.maxactive = toa_maxactive(TOA_SYN_RECV_MAXACTIVE);
	for (i = 0; i < ARRAY_SIZE(toa_hooks); i++) {
		if (toa_hooks[i].type == TOA_HOOK_KPROBE)
			err = register_kprobe(toa_hooks[i].probe);
		else
			err = register_kretprobe(toa_hooks[i].probe);
		if (err) {
			pr_err("cannot probe kernel function %s (error %d): this kernel does not allow kprobes there or lacks the function\n",
			       toa_hook_symbol(i), err);
			toa_hooks_unregister_first(i);
			return err;
		}
	}
	/* Last, the producer: the netfilter hook of every namespace. */
	err = register_pernet_subsys(&toa_nf_net_ops);
	if (err) {
		pr_err("cannot register the netfilter hook (error %d)\n", err);
		toa_hooks_unregister_first(ARRAY_SIZE(toa_hooks));
	}
	return err;
}

/*
 * nf_unregister_net_hooks and unregister_k(ret)probe wait until no hook or handler of
 * ours runs any more.
 */
void toa_hooks_unregister(void)
{
	unregister_pernet_subsys(&toa_nf_net_ops);
	toa_hooks_unregister_first(ARRAY_SIZE(toa_hooks));
}
