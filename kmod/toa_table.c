// SPDX-License-Identifier: GPL-2.0
/*
 * Per-socket TOA entries, keyed by the struct sock pointer.
 *
 * An entry is created when the handshake creates the child socket (the kretprobe on
 * tcp_v4_syn_recv_sock), or, when that probe was skipped, by the first lookup on the
 * socket (getpeername, accept, getsockopt), which then takes the connection's pending
 * entry (counted attach_fallback). It is freed when that socket is destroyed
 * (inet_sock_destruct) or at unload; if that probe was skipped, the periodic sweep frees
 * it once the connection is no longer in TCP's established table, a new socket at the
 * same address replaces it, and a namespace's leftovers go when the namespace does (all
 * three counted entries_reclaimed). Each entry also records
 * the connection's 4-tuple; a lookup only returns the entry when the socket still has
 * that 4-tuple, so an entry that outlived its socket is never applied to a new socket
 * that reuses the same memory. Readers (getname, getsockopt, destruct) use RCU; writers
 * take a spinlock with interrupts saved (kprobe handlers may run with them disabled).
 */
#include <linux/atomic.h>
#include <linux/hash.h>
#include <linux/proc_fs.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include <net/inet_hashtables.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/sock.h>
#include <net/tcp.h>
#include "toa.h"

/* 16384 buckets: short chains even with ~100k TOA connections on a host. */
#define TOA_TABLE_BITS	14

struct toa_sock_entry {
	struct hlist_node node;
	struct rcu_head rcu;
	const struct sock *sk;
	struct toa_tuple tuple;
	struct toa_addr toa;
	int dif;		/* the socket's bound device (0: none), for the sweep's lookup */
};

static struct hlist_head toa_table_hash[1 << TOA_TABLE_BITS];
static DEFINE_SPINLOCK(toa_table_lock);
/* Entries in the table: lets destruct/getname skip the lookup when there are none. */
static atomic_t toa_table_count = ATOMIC_INIT(0);

static struct hlist_head *toa_table_bucket(const struct sock *sk)
{
	return &toa_table_hash[hash_ptr(sk, TOA_TABLE_BITS)];
}

static void toa_count_alloc(const struct toa_addr *toa)
{
	toa_count(toa->type == TOA_TYPE_NAT64 ? TOA_CNT_IP6_ADDRESS_ALLOC :
						TOA_CNT_IP4_ADDRESS_ALLOC);
}

static void toa_count_free(const struct toa_addr *toa)
{
	toa_count(toa->type == TOA_TYPE_NAT64 ? TOA_CNT_IP6_ADDRESS_FREE :
						TOA_CNT_IP4_ADDRESS_FREE);
}

/* Caller holds toa_table_lock. */
static void toa_table_unlink(struct toa_sock_entry *e)
{
	hlist_del_rcu(&e->node);
	atomic_dec(&toa_table_count);
	toa_count_free(&e->toa);
	kfree_rcu(e, rcu);
}

void toa_table_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_table_hash); i++)
		INIT_HLIST_HEAD(&toa_table_hash[i]);
}

static int toa_table_store(const struct sock *sk, const struct toa_tuple *t,
		    const struct toa_addr *toa)
{
	struct toa_sock_entry *e, *old;
	struct hlist_node *tmp;
	struct hlist_head *head = toa_table_bucket(sk);
	unsigned long flags;

	e = kmalloc(sizeof(*e), GFP_ATOMIC);
	if (!e)
		return -ENOMEM;
	e->sk = sk;
	e->tuple = *t;
	e->toa = *toa;
	e->dif = READ_ONCE(sk->sk_bound_dev_if);

	spin_lock_irqsave(&toa_table_lock, flags);
	/*
	 * A leftover entry for this address belongs to a dead socket whose destruct probe
	 * was skipped (the memory now holds this new socket): reclaim it.
	 */
	hlist_for_each_entry_safe(old, tmp, head, node) {
		if (old->sk == sk) {
			toa_table_unlink(old);
			toa_count(TOA_CNT_ENTRIES_RECLAIMED);
		}
	}
	hlist_add_head_rcu(&e->node, head);
	atomic_inc(&toa_table_count);
	toa_count_alloc(toa);
	spin_unlock_irqrestore(&toa_table_lock, flags);
	return 0;
}

/*
 * The connection of @sk as a tuple: an IPv4 connection (on an AF_INET socket, or on a
 * dual-stack AF_INET6 socket, whose peer is ::ffff:a.b.c.d) with IPv4-mapped addresses,
 * a native IPv6 connection with its IPv6 addresses: the same key the hook built.
 */
static void toa_sock_tuple(const struct sock *sk, struct toa_tuple *t)
{
	t->net = sock_net(sk);
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6) {
		t->raddr = sk->sk_v6_daddr;
		t->laddr = sk->sk_v6_rcv_saddr;
		if (!toa_tuple_is_v4(t) || ipv6_addr_v4mapped(&t->laddr))
			goto ports;
	}
#endif
	ipv6_addr_set_v4mapped(READ_ONCE(sk->sk_daddr), &t->raddr);
	ipv6_addr_set_v4mapped(READ_ONCE(sk->sk_rcv_saddr), &t->laddr);
#if IS_ENABLED(CONFIG_IPV6)
ports:
#endif
	t->rport = READ_ONCE(sk->sk_dport);
	t->lport = htons(READ_ONCE(sk->sk_num));
}

/* The socket still has the 4-tuple the entry was created for. */
static bool toa_sock_matches(const struct sock *sk, const struct toa_tuple *t)
{
	struct toa_tuple cur;

	toa_sock_tuple(sk, &cur);
	return ipv6_addr_equal(&cur.raddr, &t->raddr) && ipv6_addr_equal(&cur.laddr, &t->laddr) &&
	       cur.rport == t->rport && cur.lport == t->lport;
}

/*
 * Takes the pending entry of @sk's connection (key: namespace and 4-tuple, the same as
 * the hook's) and stores it as the socket's entry. The child-creation probes call this
 * for every new child; the lookup below when that probe was skipped.
 */
bool toa_table_attach(const struct sock *sk, struct toa_tuple *t, struct toa_addr *toa)
{
	toa_sock_tuple(sk, t);
	return toa_pending_take(t, toa) && !toa_table_store(sk, t, toa);
}

/*
 * The socket has no entry, but its connection may still have a pending one: the probe on
 * tcp_v4_syn_recv_sock was skipped (another kprobe handler ran on that CPU) when the
 * child was created. Take it now. Only connected TCP sockets made by a listener can have
 * one.
 */
static noinline bool toa_table_attach_late(const struct sock *sk, struct toa_addr *toa)
{
	struct toa_tuple t;
	int state;

	if (sk->sk_type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP)
		return false;
	state = READ_ONCE(sk->sk_state);
	if (state == TCP_LISTEN || state == TCP_SYN_SENT || state == TCP_CLOSE)
		return false;
	if (!toa_table_attach(sk, &t, toa))
		return false;
	toa_count(TOA_CNT_ATTACH_FALLBACK);
	pr_debug("toa: socket %p took its pending entry late\n", sk);
	return true;
}

bool toa_table_lookup(const struct sock *sk, struct toa_addr *toa)
{
	struct toa_sock_entry *e;
	bool found = false;

	if (atomic_read(&toa_table_count)) {
		rcu_read_lock();
		hlist_for_each_entry_rcu(e, toa_table_bucket(sk), node) {
			if (e->sk == sk) {
				if (toa_sock_matches(sk, &e->tuple)) {
					*toa = e->toa;
					found = true;
				}
				break;
			}
		}
		rcu_read_unlock();
		if (found)
			return true;
	}
	/* Nothing pending anywhere (the common case): no late attach to try. */
	if (likely(toa_pending_empty()))
		return false;
	return toa_table_attach_late(sk, toa);
}

void toa_table_forget(const struct sock *sk)
{
	struct toa_sock_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	bool present = false;

	if (!atomic_read(&toa_table_count))
		return;
	/* Most destroyed sockets have no entry: check without the lock first. */
	rcu_read_lock();
	hlist_for_each_entry_rcu(e, toa_table_bucket(sk), node) {
		if (e->sk == sk) {
			present = true;
			break;
		}
	}
	rcu_read_unlock();
	if (!present)
		return;

	spin_lock_irqsave(&toa_table_lock, flags);
	hlist_for_each_entry_safe(e, tmp, toa_table_bucket(sk), node) {
		if (e->sk == sk) {
			toa_table_unlink(e);
			pr_debug("toa: freed entry of socket %p\n", sk);
			break;
		}
	}
	spin_unlock_irqrestore(&toa_table_lock, flags);
}

/* Frees every entry (unload, after the hooks are gone). Returns how many. */
unsigned int toa_table_flush(void)
{
	struct toa_sock_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	unsigned int i, n = 0;

	spin_lock_irqsave(&toa_table_lock, flags);
	for (i = 0; i < ARRAY_SIZE(toa_table_hash); i++) {
		hlist_for_each_entry_safe(e, tmp, &toa_table_hash[i], node) {
			toa_table_unlink(e);
			n++;
		}
	}
	spin_unlock_irqrestore(&toa_table_lock, flags);
	return n;
}

/*
 * Sweep: entries whose socket was destroyed without the inet_sock_destruct probe firing
 * (skipped while another kprobe handler ran on that CPU) would otherwise stay until
 * unload. Every TOA_TABLE_SWEEP the table is walked; an entry whose connection has no
 * socket at that address in TCP's established table any more (a refcounted lookup by
 * namespace, 4-tuple and bound device: the entry's socket pointer is compared, never
 * dereferenced) is freed and counted in entries_reclaimed. A socket that is closed or reset
 * but still held by its application is no longer in that table either: its entry goes
 * too (getpeername() fails with ENOTCONN on such a socket anyway).
 */
#define TOA_TABLE_SWEEP	(10 * HZ)

static struct delayed_work toa_table_sweep_work;

static bool toa_entry_sock_gone(const struct toa_sock_entry *e)
{
	struct net *net = (struct net *)e->tuple.net;
	struct sock *sk;
	bool gone;

	sk = toa_ehash_lookup(net, &e->tuple, e->dif, 0);
	gone = sk != e->sk;
	if (sk)
		sock_gen_put(sk);
	return gone;
}

/* Frees @e if it is still in the table (caller holds no table lock). */
static void toa_table_reclaim(struct toa_sock_entry *e)
{
	struct toa_sock_entry *cur;
	unsigned long flags;

	spin_lock_irqsave(&toa_table_lock, flags);
	hlist_for_each_entry(cur, toa_table_bucket(e->sk), node) {
		if (cur == e) {
			toa_table_unlink(e);
			toa_count(TOA_CNT_ENTRIES_RECLAIMED);
			pr_debug("toa: reclaimed entry of gone socket %p\n", e->sk);
			break;
		}
	}
	spin_unlock_irqrestore(&toa_table_lock, flags);
}

static void toa_table_sweep(struct work_struct *work)
{
	struct toa_sock_entry *e;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_table_hash) && atomic_read(&toa_table_count); i++) {
		if (hlist_empty(&toa_table_hash[i]))
			continue;
		/*
		 * Under RCU the entry (kfree_rcu) and its namespace (the pernet exit below
		 * waits for a grace period after removing a namespace's entries) stay valid.
		 */
		rcu_read_lock();
		hlist_for_each_entry_rcu(e, &toa_table_hash[i], node) {
			if (toa_entry_sock_gone(e))
				toa_table_reclaim(e);
		}
		rcu_read_unlock();
		cond_resched();
	}
	schedule_delayed_work(&toa_table_sweep_work, TOA_TABLE_SWEEP);
}

/*
 * A namespace goes away: its user sockets are all gone already (each holds a reference
 * on it), so an entry left here lost its destruct call. Free them before the namespace's
 * memory can be reused, and let a running sweep finish with them.
 */
static void __net_exit toa_table_net_exit(struct net *net)
{
	struct toa_sock_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	unsigned int i, n = 0;

	if (!atomic_read(&toa_table_count))
		return;
	spin_lock_irqsave(&toa_table_lock, flags);
	for (i = 0; i < ARRAY_SIZE(toa_table_hash); i++) {
		hlist_for_each_entry_safe(e, tmp, &toa_table_hash[i], node) {
			if (e->tuple.net == net) {
				toa_table_unlink(e);
				n++;
			}
		}
	}
	spin_unlock_irqrestore(&toa_table_lock, flags);
	if (n) {
		toa_count_n(TOA_CNT_ENTRIES_RECLAIMED, n);
		synchronize_rcu();
	}
}

static struct pernet_operations toa_table_net_ops = {
	.exit = toa_table_net_exit,
};

int toa_table_sweep_init(void)
{
	int err = register_pernet_subsys(&toa_table_net_ops);

	if (err)
		return err;
	INIT_DELAYED_WORK(&toa_table_sweep_work, toa_table_sweep);
	schedule_delayed_work(&toa_table_sweep_work, TOA_TABLE_SWEEP);
	return 0;
}

/* Before the final flush: no sweep runs after this. */
void toa_table_sweep_exit(void)
{
	cancel_delayed_work_sync(&toa_table_sweep_work);
}

/* After the final flush (the table is empty: the namespace exits find nothing). */
void toa_table_net_unregister(void)
{
	unregister_pernet_subsys(&toa_table_net_ops);
}

/*
 * /proc/net/toa_table of one network namespace: a seq_file iterator over the hash table
 * under RCU (one pass, no buffer sizing), listing only the entries whose connection lives
 * in the reader's namespace (the namespace of the /proc/net it opened). Position 0 is the
 * header; entry k of that namespace is position k + 1.
 */
struct toa_table_iter {
	struct seq_net_private p;	/* first: seq_file_net() reads it */
	unsigned int bucket;
};

/* The next entry of this namespace after @n in bucket it->bucket, or in later buckets. */
static struct toa_sock_entry *toa_iter_scan(struct seq_file *m, struct hlist_node *n)
{
	struct toa_table_iter *it = m->private;
	const struct net *net = seq_file_net(m);

	for (;;) {
		for (; n; n = rcu_dereference(hlist_next_rcu(n))) {
			struct toa_sock_entry *e = hlist_entry(n, struct toa_sock_entry, node);

			if (e->tuple.net == net)
				return e;
		}
		if (++it->bucket >= ARRAY_SIZE(toa_table_hash))
			return NULL;
		n = rcu_dereference(hlist_first_rcu(&toa_table_hash[it->bucket]));
	}
}

static void *toa_table_seq_start(struct seq_file *m, loff_t *pos)
	__acquires(RCU)
{
	struct toa_table_iter *it = m->private;
	struct toa_sock_entry *e;
	loff_t k;

	rcu_read_lock();
	if (!*pos)
		return SEQ_START_TOKEN;
	it->bucket = 0;
	e = toa_iter_scan(m, rcu_dereference(hlist_first_rcu(&toa_table_hash[0])));
	for (k = 1; e && k < *pos; k++)
		e = toa_iter_scan(m, rcu_dereference(hlist_next_rcu(&e->node)));
	return e;
}

static void *toa_table_seq_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct toa_table_iter *it = m->private;

	++*pos;
	if (v == SEQ_START_TOKEN) {
		it->bucket = 0;
		return toa_iter_scan(m, rcu_dereference(hlist_first_rcu(&toa_table_hash[0])));
	}
	return toa_iter_scan(m, rcu_dereference(hlist_next_rcu(&((struct toa_sock_entry *)v)->node)));
}

static void toa_table_seq_stop(struct seq_file *m, void *v)
	__releases(RCU)
{
	rcu_read_unlock();
}

static int toa_table_seq_show(struct seq_file *m, void *v)
{
	const struct toa_sock_entry *e = v;

	if (v == SEQ_START_TOKEN) {
		seq_puts(m, "socket type address port transport\n");
		return 0;
	}
	if (e->toa.type == TOA_TYPE_NAT64)
		seq_printf(m, "%p nat64 %pI6c %u %s\n", e->sk, e->toa.addr, e->toa.port,
			   toa_tuple_is_v4(&e->tuple) ? "ipv4" : "ipv6");
	else
		seq_printf(m, "%p ipv4 %pI4 %u %s\n", e->sk, e->toa.addr, e->toa.port,
			   toa_tuple_is_v4(&e->tuple) ? "ipv4" : "ipv6");
	return 0;
}

static const struct seq_operations toa_table_seq_ops = {
	.start = toa_table_seq_start,
	.next = toa_table_seq_next,
	.stop = toa_table_seq_stop,
	.show = toa_table_seq_show,
};

/* Root only (root of the namespace's owning user namespace): it names real clients. */
struct proc_dir_entry *toa_table_proc_create(struct net *net)
{
	return proc_create_net("toa_table", 0400, net->proc_net, &toa_table_seq_ops,
			       sizeof(struct toa_table_iter));
}
