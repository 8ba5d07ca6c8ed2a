// SPDX-License-Identifier: GPL-2.0
/*
 * TOA seen on a SYN, or on an ACK of a handshake in progress, kept until the child socket
 * takes it.
 *
 * The netfilter hook (toa_skb.c) sees every segment before TCP does. A SYN creates only
 * a request socket (or, under SYN cookies, nothing); the full socket appears when the
 * final ACK (or, with TCP_DEFER_ACCEPT, the first data segment; with TCP Fast Open, the
 * SYN itself) reaches tcp_v4_syn_recv_sock(). In between, the TOA is remembered here keyed
 * by the connection's 4-tuple and network namespace. The child-creation probe takes it
 * (toa_hooks.c); if that probe was skipped, the first getpeername()/accept()/getsockopt()
 * on the socket takes it (toa_table.c). Only listeners in scope (the `ports` parameter)
 * and trusted, unambiguous, plausible options get here.
 *
 * Which one is kept: an ACK's option replaces the SYN's (the ACK wins). A SYN with the
 * same sequence number as the stored SYN is a retransmission and leaves the entry (the
 * first SYN's option stays); a SYN with another sequence number is a new handshake on the
 * same 4-tuple and replaces it; a SYN without a usable option removes it.
 *
 * Bounds: at most TOA_PENDING_NET_MAX entries per network namespace, so a flood in one
 * namespace (one tenant) cannot take the room of another, and TOA_PENDING_MAX in all, so
 * memory stays bounded however many namespaces there are. Both are checked before
 * anything is allocated; an option over either is counted in syn_pending_dropped. Entries
 * expire after TOA_PENDING_TTL, longer than a pending handshake lives (SYN-ACK
 * retransmissions with the default tcp_synack_retries=5 end after about 63 s). SYN cookie
 * SYNs are stored like the others: under a flood the kernel answers with cookies and keeps
 * no state, and this table is then the only place the SYN's option survives; the
 * per-namespace quota is what keeps that from hurting other namespaces.
 *
 * Readers use RCU; writers take the lock of the bucket's stripe (TOA_PENDING_LOCKS locks)
 * with interrupts saved (the hook runs in softirq, the probes with interrupts possibly
 * disabled). A namespace's entries are removed when it is destroyed.
 */
#include <linux/hash.h>
#include <linux/jhash.h>
#include <linux/jiffies.h>
#include <linux/random.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include <net/ipv6.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include "toa.h"

#define TOA_PENDING_BITS	14
#define TOA_PENDING_LOCK_BITS	8
#define TOA_PENDING_TTL		(75 * HZ)
#define TOA_PENDING_GC		(5 * HZ)

struct toa_pending_entry {
	struct hlist_node node;
	struct rcu_head rcu;
	struct toa_tuple key;
	struct toa_addr toa;
	unsigned long expires;
	u32 seq;		/* the segment's sequence number */
	bool syn;		/* stored from a SYN (else from an ACK) */
};

/* Per network namespace: entries it holds now. */
struct toa_pending_net {
	atomic_t count;
};

static struct hlist_head toa_pending_hash[1 << TOA_PENDING_BITS];
static spinlock_t toa_pending_locks[1 << TOA_PENDING_LOCK_BITS];
atomic_t toa_pending_total = ATOMIC_INIT(0);
static u32 toa_pending_seed;
static unsigned int toa_pending_net_id;
static struct delayed_work toa_pending_gc_work;

static unsigned int toa_pending_hash_of(const struct toa_tuple *t)
{
	u32 h = jhash2((const u32 *)&t->raddr, sizeof(t->raddr) / sizeof(u32),
		       toa_pending_seed ^ hash_ptr(t->net, 32));

	h = jhash2((const u32 *)&t->laddr, sizeof(t->laddr) / sizeof(u32), h);
	h = jhash_1word(((__force u32)t->rport << 16) | (__force u32)t->lport, h);

	return h >> (32 - TOA_PENDING_BITS);
}

static spinlock_t *toa_pending_lock_of(unsigned int bucket)
{
	return &toa_pending_locks[bucket & ((1 << TOA_PENDING_LOCK_BITS) - 1)];
}

static struct toa_pending_net *toa_pending_net(const struct net *net)
{
	/* net_generic() takes a non-const pointer; it only reads. */
	return net_generic((struct net *)net, toa_pending_net_id);
}

static bool toa_tuple_eq(const struct toa_tuple *a, const struct toa_tuple *b)
{
	return a->net == b->net && ipv6_addr_equal(&a->raddr, &b->raddr) &&
	       ipv6_addr_equal(&a->laddr, &b->laddr) && a->rport == b->rport &&
	       a->lport == b->lport;
}

/* Caller holds the bucket's lock. */
static void toa_pending_unlink(struct toa_pending_entry *e)
{
	hlist_del_rcu(&e->node);
	atomic_dec(&toa_pending_net(e->key.net)->count);
	atomic_dec(&toa_pending_total);
	kfree_rcu(e, rcu);
}

bool toa_pending_store(const struct toa_tuple *t, const struct toa_addr *toa, u32 seq, bool syn)
{
	struct toa_pending_net *pn = toa_pending_net(t->net);
	unsigned int b = toa_pending_hash_of(t);
	struct toa_pending_entry *e, *old = NULL;
	spinlock_t *lock = toa_pending_lock_of(b);
	struct hlist_node *tmp;
	unsigned long flags;

	/* Quotas first: a flood costs two atomic reads per SYN, no allocation, no lock. */
	if (atomic_read(&pn->count) >= TOA_PENDING_NET_MAX ||
	    atomic_read(&toa_pending_total) >= TOA_PENDING_MAX) {
		toa_count(TOA_CNT_SYN_PENDING_DROPPED);
		return false;
	}
	e = kmalloc(sizeof(*e), GFP_ATOMIC);
	if (!e) {
		toa_count(TOA_CNT_SYN_PENDING_DROPPED);
		return false;
	}
	e->key = *t;
	e->toa = *toa;
	e->expires = jiffies + TOA_PENDING_TTL;
	e->seq = seq;
	e->syn = syn;

	spin_lock_irqsave(lock, flags);
	hlist_for_each_entry_safe(old, tmp, &toa_pending_hash[b], node) {
		if (toa_tuple_eq(&old->key, t))
			break;
		if (time_after_eq(jiffies, old->expires))
			toa_pending_unlink(old);
	}
	if (old && syn && old->syn && old->seq == seq &&
	    time_before(jiffies, old->expires)) {
		/* A retransmitted SYN: the first SYN's option stays. */
		spin_unlock_irqrestore(lock, flags);
		kfree(e);
		return false;
	}
	if (old) {
		/* The ACK of the stored SYN (its option wins), or a new handshake. */
		hlist_replace_rcu(&old->node, &e->node);
		kfree_rcu(old, rcu);
	} else {
		/* The quota checks above raced with other CPUs by at most one entry each. */
		hlist_add_head_rcu(&e->node, &toa_pending_hash[b]);
		atomic_inc(&pn->count);
		atomic_inc(&toa_pending_total);
	}
	spin_unlock_irqrestore(lock, flags);
	return true;
}

/* Whether bucket @b holds an entry of @t (expired or not), under RCU without the lock. */
static bool toa_pending_in_bucket(const struct toa_tuple *t, unsigned int b)
{
	struct toa_pending_entry *e;
	bool found = false;

	rcu_read_lock();
	hlist_for_each_entry_rcu(e, &toa_pending_hash[b], node) {
		if (toa_tuple_eq(&e->key, t)) {
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/*
 * Removes the entry of @t; with @toa, returns whether there was one (not expired) and its
 * TOA. Callers ask for every new child and every SYN without TOA while anything is
 * pending: the stripe lock is only taken when the bucket holds the key.
 */
static bool toa_pending_unlink_key(const struct toa_tuple *t, struct toa_addr *toa)
{
	struct toa_pending_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	spinlock_t *lock;
	bool found = false;
	unsigned int b;

	if (toa_pending_empty())
		return false;
	b = toa_pending_hash_of(t);
	if (!toa_pending_in_bucket(t, b))
		return false;
	lock = toa_pending_lock_of(b);
	spin_lock_irqsave(lock, flags);
	hlist_for_each_entry_safe(e, tmp, &toa_pending_hash[b], node) {
		if (toa_tuple_eq(&e->key, t)) {
			if (toa && time_before(jiffies, e->expires)) {
				*toa = e->toa;
				found = true;
			}
			toa_pending_unlink(e);
			break;
		}
	}
	spin_unlock_irqrestore(lock, flags);
	return found;
}

void toa_pending_remove(const struct toa_tuple *t)
{
	toa_pending_unlink_key(t, NULL);
}

bool toa_pending_take(const struct toa_tuple *t, struct toa_addr *toa)
{
	return toa_pending_unlink_key(t, toa);
}

/* Removes expired entries, or every entry of @net, or every entry (@all). */
static void toa_pending_sweep(const struct net *net, bool all)
{
	struct toa_pending_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_pending_hash); i++) {
		spinlock_t *lock = toa_pending_lock_of(i);

		if (hlist_empty(&toa_pending_hash[i]))
			continue;
		spin_lock_irqsave(lock, flags);
		hlist_for_each_entry_safe(e, tmp, &toa_pending_hash[i], node) {
			if (all || (net ? e->key.net == net : time_after_eq(jiffies, e->expires)))
				toa_pending_unlink(e);
		}
		spin_unlock_irqrestore(lock, flags);
	}
}

static void toa_pending_gc(struct work_struct *work)
{
	toa_pending_sweep(NULL, false);
	schedule_delayed_work(&toa_pending_gc_work, TOA_PENDING_GC);
}

/* A namespace goes away: its entries must not match a later namespace at the same address. */
static void __net_exit toa_pending_net_exit(struct net *net)
{
	toa_pending_sweep(net, false);
}

static struct pernet_operations toa_pending_net_ops = {
	.exit = toa_pending_net_exit,
	.id = &toa_pending_net_id,
	.size = sizeof(struct toa_pending_net),
};

int toa_pending_init(void)
{
	unsigned int i;
	int err;

	for (i = 0; i < ARRAY_SIZE(toa_pending_hash); i++)
		INIT_HLIST_HEAD(&toa_pending_hash[i]);
	for (i = 0; i < ARRAY_SIZE(toa_pending_locks); i++)
		spin_lock_init(&toa_pending_locks[i]);
	toa_pending_seed = get_random_u32();
	/* Zeroed per-namespace state (count 0) for every namespace, existing and new. */
	err = register_pernet_subsys(&toa_pending_net_ops);
	if (err)
		return err;
	INIT_DELAYED_WORK(&toa_pending_gc_work, toa_pending_gc);
	schedule_delayed_work(&toa_pending_gc_work, TOA_PENDING_GC);
	return 0;
}

/* Called after the hooks are gone: nothing adds entries any more. */
void toa_pending_exit(void)
{
	cancel_delayed_work_sync(&toa_pending_gc_work);
	toa_pending_sweep(NULL, true);
	unregister_pernet_subsys(&toa_pending_net_ops);
}
