// SPDX-License-Identifier: GPL-2.0
/*
 * TOA seen on a SYN, kept until the handshake completes.
 *
 * The SYN creates only a request socket; the full socket appears when the final ACK
 * reaches tcp_v4_syn_recv_sock(). In between, the TOA is remembered here keyed by the
 * connection's 4-tuple and network namespace. The table is bounded (TOA_PENDING_MAX
 * entries, further SYNs are counted in syn_pending_dropped) and entries expire after
 * TOA_PENDING_TTL, so a SYN flood cannot grow it. Readers use RCU; writers take a
 * spinlock with interrupts saved, since kprobe handlers may run with interrupts disabled.
 */
#include <linux/hash.h>
#include <linux/jhash.h>
#include <linux/jiffies.h>
#include <linux/random.h>
#include <linux/rculist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include "toa.h"

#define TOA_PENDING_BITS	10
#define TOA_PENDING_MAX		16384
/* Longer than SYN-ACK retransmission with default tcp_synack_retries reaches in practice. */
#define TOA_PENDING_TTL		(30 * HZ)
#define TOA_PENDING_GC		(5 * HZ)

struct toa_pending_entry {
	struct hlist_node node;
	struct rcu_head rcu;
	struct toa_tuple key;
	struct toa_addr toa;
	unsigned long expires;
};

static struct hlist_head toa_pending_hash[1 << TOA_PENDING_BITS];
static DEFINE_SPINLOCK(toa_pending_lock);
static unsigned int toa_pending_count;	/* under toa_pending_lock */
static u32 toa_pending_seed;
static struct delayed_work toa_pending_gc_work;

static struct hlist_head *toa_pending_bucket(const struct toa_tuple *t)
{
	u32 h = jhash_3words((__force u32)t->raddr, (__force u32)t->laddr,
			     ((__force u32)t->rport << 16) | (__force u32)t->lport,
			     toa_pending_seed ^ hash_ptr(t->net, 32));

	return &toa_pending_hash[h >> (32 - TOA_PENDING_BITS)];
}

static bool toa_tuple_eq(const struct toa_tuple *a, const struct toa_tuple *b)
{
	return a->net == b->net && a->raddr == b->raddr && a->laddr == b->laddr &&
	       a->rport == b->rport && a->lport == b->lport;
}

/* Caller holds toa_pending_lock. */
static void toa_pending_unlink(struct toa_pending_entry *e)
{
	hlist_del_rcu(&e->node);
	toa_pending_count--;
	kfree_rcu(e, rcu);
}

void toa_pending_store(const struct toa_tuple *t, const struct toa_addr *toa)
{
	struct toa_pending_entry *e, *old = NULL;
	struct hlist_node *tmp;
	struct hlist_head *head;
	unsigned long flags;

	e = kmalloc(sizeof(*e), GFP_ATOMIC);
	if (!e) {
		toa_count(TOA_CNT_SYN_PENDING_DROPPED);
		return;
	}
	e->key = *t;
	e->toa = *toa;
	e->expires = jiffies + TOA_PENDING_TTL;
	head = toa_pending_bucket(t);

	spin_lock_irqsave(&toa_pending_lock, flags);
	hlist_for_each_entry_safe(old, tmp, head, node) {
		if (toa_tuple_eq(&old->key, t))
			break;
		if (time_after_eq(jiffies, old->expires))
			toa_pending_unlink(old);
	}
	if (old) {
		/* A retransmitted SYN: its option replaces the earlier one. */
		hlist_replace_rcu(&old->node, &e->node);
		kfree_rcu(old, rcu);
	} else if (toa_pending_count >= TOA_PENDING_MAX) {
		spin_unlock_irqrestore(&toa_pending_lock, flags);
		kfree(e);
		toa_count(TOA_CNT_SYN_PENDING_DROPPED);
		return;
	} else {
		hlist_add_head_rcu(&e->node, head);
		toa_pending_count++;
	}
	spin_unlock_irqrestore(&toa_pending_lock, flags);
	toa_count(TOA_CNT_SYN_PENDING_STORED);
}

bool toa_pending_get(const struct toa_tuple *t, struct toa_addr *toa)
{
	struct toa_pending_entry *e;
	bool found = false;

	if (!READ_ONCE(toa_pending_count))
		return false;
	rcu_read_lock();
	hlist_for_each_entry_rcu(e, toa_pending_bucket(t), node) {
		if (toa_tuple_eq(&e->key, t) && time_before(jiffies, e->expires)) {
			*toa = e->toa;
			found = true;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

void toa_pending_remove(const struct toa_tuple *t)
{
	struct toa_pending_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;

	if (!READ_ONCE(toa_pending_count))
		return;
	spin_lock_irqsave(&toa_pending_lock, flags);
	hlist_for_each_entry_safe(e, tmp, toa_pending_bucket(t), node) {
		if (toa_tuple_eq(&e->key, t)) {
			toa_pending_unlink(e);
			break;
		}
	}
	spin_unlock_irqrestore(&toa_pending_lock, flags);
}

/* Removes expired entries (all entries when @all). */
static void toa_pending_sweep(bool all)
{
	struct toa_pending_entry *e;
	struct hlist_node *tmp;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&toa_pending_lock, flags);
	for (i = 0; i < ARRAY_SIZE(toa_pending_hash); i++) {
		hlist_for_each_entry_safe(e, tmp, &toa_pending_hash[i], node) {
			if (all || time_after_eq(jiffies, e->expires))
				toa_pending_unlink(e);
		}
	}
	spin_unlock_irqrestore(&toa_pending_lock, flags);
}

static void toa_pending_gc(struct work_struct *work)
{
	toa_pending_sweep(false);
	schedule_delayed_work(&toa_pending_gc_work, TOA_PENDING_GC);
}

int toa_pending_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(toa_pending_hash); i++)
		INIT_HLIST_HEAD(&toa_pending_hash[i]);
	toa_pending_seed = get_random_u32();
	INIT_DELAYED_WORK(&toa_pending_gc_work, toa_pending_gc);
	schedule_delayed_work(&toa_pending_gc_work, TOA_PENDING_GC);
	return 0;
}

/* Called after the hooks are gone: nothing adds entries any more. */
void toa_pending_exit(void)
{
	cancel_delayed_work_sync(&toa_pending_gc_work);
	toa_pending_sweep(true);
}
