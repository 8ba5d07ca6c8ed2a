/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Declarations shared by the parts of the toa module. Each part lives in its own file:
 *   toa_main.c     load/unload order
 *   toa_params.c   module parameters -> RCU-published configuration
 *   toa_skb.c      find the TCP options of a segment, parse, scope and trust, store pending
 *   toa_pending.c  TOA seen on a SYN or handshake ACK, waiting for the child socket
 *   toa_table.c    per-socket TOA entries, late attach, sweep of entries of gone sockets
 *   toa_hooks.c    netfilter hooks (per namespace), kprobes/kretprobes
 *   toa_sockopt.c  NAT64 getsockopt(IPPROTO_IP, 4096)
 *   toa_stats.c    per-cpu counters
 *   toa_proc.c     /proc/net/toa_stats and /proc/net/toa_table
 */
#ifndef TOA_H
#define TOA_H

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/types.h>
#include <linux/in6.h>
#include <asm/byteorder.h>
#include <linux/percpu.h>
#include <linux/seq_file.h>
#include "toa_parse.h"

struct sk_buff;
struct sock;

/* ---- configuration (toa_params.c) ---- */
#define TOA_MAX_TRUSTED	64
#define TOA_MAX_PORT_RANGES	64

/* Which option a segment with several valid TOA options yields (parameter dup_rule). */
enum toa_dup_rule {
	TOA_DUP_REJECT = 0,	/* none: the segment is ambiguous (default) */
	TOA_DUP_FIRST,		/* the first one: balancers that insert before the client's options */
	TOA_DUP_LAST,		/* the last one: balancers that append after them */
};


struct toa_config {
	struct toa_kinds kinds;
	u8 ipv4_list[256];	/* kinds in the order given, for readback */
	u8 nat64_list[256];
	u16 n_ipv4;
	u16 n_nat64;
	u16 n_trusted;
	struct toa_cidr trusted[TOA_MAX_TRUSTED];
	bool accept_any;	/* accept_any_source: TOA from every source when n_trusted == 0 */
	u8 dup_rule;		/* enum toa_dup_rule */
	u16 n_ports;		/* 0: every local port is in scope */
	struct toa_port_range port_list[TOA_MAX_PORT_RANGES];	/* for readback */
	unsigned long ports[BITS_TO_LONGS(65536)];	/* local ports in scope */
};

extern struct toa_config __rcu *toa_cfg;
bool toa_config_trusted_v4(const struct toa_config *cfg, __be32 saddr);
bool toa_config_trusted_v6(const struct toa_config *cfg, const struct in6_addr *saddr);
bool toa_config_port_in_scope(const struct toa_config *cfg, __be16 lport);

/* ---- counters (toa_stats.c) ---- */
enum toa_counter {
	/* The first seven are a contract: order and names are fixed. */
	TOA_CNT_SYN_RECV_SOCK_TOA,
	TOA_CNT_SYN_RECV_SOCK_NO_TOA,
	TOA_CNT_GETNAME_TOA_OK,
	TOA_CNT_GETNAME_TOA_MISMATCH,
	TOA_CNT_GETNAME_TOA_EMPTY,
	TOA_CNT_IP6_ADDRESS_ALLOC,
	TOA_CNT_IP6_ADDRESS_FREE,
	TOA_CNT_IP4_ADDRESS_ALLOC,
	TOA_CNT_IP4_ADDRESS_FREE,
	TOA_CNT_TOA_UNTRUSTED,
	TOA_CNT_TOA_MALFORMED,
	TOA_CNT_SYN_PENDING_STORED,
	TOA_CNT_SYN_PENDING_DROPPED,
	TOA_CNT_GETSOCKOPT_OK,
	TOA_CNT_GETSOCKOPT_EMPTY,
	TOA_CNT_TOA_REFUSED_ADDRESS,
	TOA_CNT_TOA_AMBIGUOUS,
	TOA_CNT_ACK_PENDING_STORED,
	TOA_CNT_ATTACH_FALLBACK,
	TOA_CNT_ENTRIES_RECLAIMED,
	TOA_CNT_MAX
};

struct toa_cpu_stats {
	u64 v[TOA_CNT_MAX];
};

DECLARE_PER_CPU(struct toa_cpu_stats, toa_stats);

static inline void toa_count(enum toa_counter c)
{
	this_cpu_inc(toa_stats.v[c]);
}

static inline void toa_count_n(enum toa_counter c, u64 n)
{
	this_cpu_add(toa_stats.v[c], n);
}

void toa_stats_show(struct seq_file *m);

/* ---- segment decoding (toa_skb.c) ---- */

/*
 * A connection as seen in the segment: remote = the balancer, local = this host. The
 * network namespace (of the listener) is part of the key: containers often reuse the same
 * private addresses. It is compared, never dereferenced.
 */
struct toa_tuple {
	const struct net *net;
	struct in6_addr raddr;	/* IPv4 transport: ::ffff:a.b.c.d (never on IPv6 wires) */
	struct in6_addr laddr;
	__be16 rport;
	__be16 lport;
};

/* The connection of @t came over IPv4 (its addresses are IPv4-mapped). */
static inline bool toa_tuple_is_v4(const struct toa_tuple *t)
{
	return t->raddr.s6_addr32[0] == 0 && t->raddr.s6_addr32[1] == 0 &&
	       t->raddr.s6_addr32[2] == htonl(0x0000ffff);
}

struct nf_hook_state;
unsigned int toa_skb_nf_local_in(void *priv, struct sk_buff *skb,
				 const struct nf_hook_state *state);
unsigned int toa_skb_nf_local_in6(void *priv, struct sk_buff *skb,
				  const struct nf_hook_state *state);
struct sock *toa_ehash_lookup(struct net *net, const struct toa_tuple *t, int dif, int sdif);

/* ---- SYN pending table (toa_pending.c) ---- */
/* Per network namespace, and in all; an entry takes one kmalloc-128 object. */
#define TOA_PENDING_NET_MAX	4096
#define TOA_PENDING_MAX		65536
int toa_pending_init(void);
void toa_pending_exit(void);
bool toa_pending_store(const struct toa_tuple *t, const struct toa_addr *toa, u32 seq, bool syn);
extern atomic_t toa_pending_total;

/* Nothing pending anywhere: the common case, one atomic read. */
static inline bool toa_pending_empty(void)
{
	return !atomic_read(&toa_pending_total);
}

bool toa_pending_take(const struct toa_tuple *t, struct toa_addr *toa);
void toa_pending_remove(const struct toa_tuple *t);

/* ---- per-socket table (toa_table.c) ---- */
void toa_table_init(void);
int toa_table_sweep_init(void);
void toa_table_sweep_exit(void);
void toa_table_net_unregister(void);
bool toa_table_attach(const struct sock *sk, struct toa_tuple *t, struct toa_addr *toa);
bool toa_table_lookup(const struct sock *sk, struct toa_addr *toa);
void toa_table_forget(const struct sock *sk);
unsigned int toa_table_flush(void);
struct net;
struct proc_dir_entry;
struct proc_dir_entry *toa_table_proc_create(struct net *net);

/* ---- hooks (toa_hooks.c) ---- */
int toa_hooks_register(void);
void toa_hooks_unregister(void);
void toa_hooks_show_missed(struct seq_file *m);

/* ---- NAT64 getsockopt (toa_sockopt.c) ---- */
#define TOA_SO_GET_LOOKUP	4096

struct toa_nat64_peer {
	struct in6_addr saddr;
	u16 sport;		/* network byte order */
};

int toa_sockopt_register(void);
void toa_sockopt_unregister(void);

/* ---- proc files (toa_proc.c) ---- */
int toa_proc_init(void);
void toa_proc_exit(void);

#endif /* TOA_H */
