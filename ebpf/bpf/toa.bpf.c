// SPDX-License-Identifier: GPL-2.0
/*
 * TOA (TCP Option Address) as eBPF programs attached to the root cgroup (v2): the same
 * application contract as kmod/ (see kmod/README.md), without a kernel module.
 *
 *   toa_sockops        sock_ops: on listen(), asks the kernel to keep each SYN (TCP_SAVE_SYN);
 *                      when a passive connection is established, walks the TCP options of the
 *                      final ACK (skb_data) and of the saved SYN (TCP_BPF_SYN), applies the
 *                      scope, trust, duplicate and address rules, and stores the client
 *                      address in the socket-local storage toa_sk. The final ACK's option
 *                      wins, as in the module. The walk goes through bpf_loop (5.17+);
 *   toa_sockops_legacy the same with the static walk, for older kernels (5.10).
 *   toa_getpeername4/6 cgroup/getpeername4 and 6: rewrite the peer address of getpeername()
 *                      and accept() (IPv4, ::ffff:a.b.c.d on AF_INET6 sockets, the IPv6
 *                      client of a NAT64 option on connections over IPv6).
 *   toa_getsockopt     cgroup/getsockopt: answers getsockopt(IPPROTO_IP, 4096) with struct
 *                      toa_nat64_peer, ENOENT without a NAT64 entry, EINVAL when the length is
 *                      below 20 (kernels >= 5.18, where a program may set the error).
 *   toa_getsockopt_legacy
 *                      the same for older kernels (5.10): a program may only clear the error,
 *                      so ENOENT and EINVAL stay the kernel's ENOPROTOOPT.
 *
 * The context structs are UAPI (linux/bpf.h), so the object needs no kernel-specific types
 * and one build serves every kernel >= 5.10 of the test matrix.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "toa_ebpf.h"

/* Not in the UAPI headers that linux/bpf.h pulls in. */
#define SOL_TCP		6
#define TCP_SAVE_SYN	27
#define SOCK_STREAM	1
#define AF_INET		2
#define AF_INET6	10
#define ENOENT		2
#define EINVAL		22
#define ENOPROTOOPT	92
#define TCP_OPT_EOL	0
#define TCP_OPT_NOP	1
#define OPT_MAX		40	/* TCP option bytes at most */
#define OPT_BUF		64	/* power of two: indexes are masked to it for the verifier */

char LICENSE[] SEC("license") = "GPL";

/* toa_config, toa_stats, toa_sk */
#include "toa_maps.h"

/*
 * One parsed segment: where the first and the last valid TOA start (and their types), the
 * malformed and valid counts, and the entry that the rules picked (filled after the walk).
 */
struct parse_res {
	struct toa_sk_entry e;
	__u32 first_pos;
	__u32 last_pos;
	__u32 first_type;
	__u32 last_type;
	__u32 malformed;
	__u32 n_valid;
};

/*
 * Working memory of the sock_ops program. A map value, not the stack: 5.10's verifier refuses
 * stack accesses at a variable offset (allowed from 5.12), and the option walk indexes by the
 * option lengths it reads.
 */
struct scratch {
	__u8 opt[OPT_BUF];
	__u8 synhdr[20 + OPT_BUF];	/* the saved SYN's TCP header; its options are walked in place */
	struct parse_res res;
	__u32 trusted;	/* the connection's source is trusted (read back, never kept in a register) */
	__u32 is_syn;	/* the segment that made the child is the SYN itself (TCP Fast Open) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} toa_scratch SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&toa_stats, &c);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void count_n(__u32 c, __u32 n)
{
	__u64 *v;

	if (!n)
		return;
	v = bpf_map_lookup_elem(&toa_stats, &c);
	if (v)
		__sync_fetch_and_add(v, n);
}

static __always_inline struct toa_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&toa_config, &zero);
}

static __always_inline int kind_has(const __u32 *set, __u8 kind)
{
	return (set[(kind >> 5) & 7] >> (kind & 31)) & 1;
}

static __always_inline int port_in_scope(const struct toa_config *cfg, __u32 lport)
{
	if (!cfg->n_ports)
		return 1;
	return (cfg->ports[(lport >> 5) & 2047] >> (lport & 31)) & 1;
}

/*
 * The option walk of kmod/toa_parse.c toa_parse_options(), over opt[0..len). Shaped for the
 * verifier: the loop runs over byte positions (an exact counter) and `next`, where the next
 * option starts, is only compared, never used as an index; a walk that indexed by the option
 * lengths it read blew the verifier's 1M instruction budget on 6.1. The loop body only notes
 * where valid options start: the address is copied once, after the walk, from the option the
 * rules pick (copying it in the body made every one of the 40 positions verify the copy).
 */
/*
 * The counters and the first-option test go through memory (volatile): kept in registers or
 * on the stack, their exact values would differ between the paths through the loop and the
 * verifier could not prune any of them (1M instructions).
 */
#define RES_INC(f) (*(volatile __u32 *)&(f) = *(volatile __u32 *)&(f) + 1)

/*
 * One option at opt[pos] (pos < len <= OPT_MAX): notes a valid TOA, counts malformed ones.
 * Returns where the next option starts, or 0 to end the walk (EOL, structural error).
 */
static __always_inline __u32 walk_step(const __u8 *opt, __u32 pos, __u32 len,
				       const struct toa_config *cfg, struct parse_res *res)
{
	__u8 kind, olen, type;
	int is4, is6;

	kind = opt[pos & (OPT_BUF - 1)];
	if (kind == TCP_OPT_EOL)
		return 0;
	if (kind == TCP_OPT_NOP)
		return pos + 1;
	/* Every other kind has a length byte that covers kind and length. */
	if (len - pos < 2) {
		RES_INC(res->malformed);
		return 0;
	}
	olen = opt[(pos + 1) & (OPT_BUF - 1)];
	if (olen < 2 || olen > len - pos) {
		RES_INC(res->malformed);
		return 0;
	}
	is4 = kind_has(cfg->ipv4_kinds, kind);
	is6 = kind_has(cfg->nat64_kinds, kind);
	type = TOA_TYPE_NONE;
	if (is4 && olen == TOA_IPV4_OPT_LEN)
		type = TOA_TYPE_IPV4;
	else if (is6 && olen == TOA_NAT64_OPT_LEN)
		type = TOA_TYPE_NAT64;
	else if (is4 || is6)
		RES_INC(res->malformed);
	if (type != TOA_TYPE_NONE) {
		res->last_pos = pos;
		res->last_type = type;
		if (*(volatile __u32 *)&res->first_type == TOA_TYPE_NONE) {
			res->first_pos = pos;
			res->first_type = type;
		}
		RES_INC(res->n_valid);
	}
	return pos + olen;
}

static __always_inline void walk_init(struct parse_res *res)
{
	res->malformed = 0;
	res->n_valid = 0;
	res->first_type = TOA_TYPE_NONE;
}

/*
 * The static walk, for kernels without bpf_loop (before 5.17): the verifier checks it as
 * written, so the loop runs over byte positions (an exact counter) and `next`, where the next
 * option starts, is only compared, never used as an index; a walk that indexed by the option
 * lengths it read blew the verifier's 1M instruction budget on 6.1. The body only notes where
 * valid options start: the address is copied once, after the walk, from the option the rules
 * pick (copying it in the body made each of the 40 positions verify the copy).
 */
static __noinline int parse_options(const __u8 *opt, __u32 len, const struct toa_config *cfg,
				    struct parse_res *res)
{
	__u32 pos, next = 0;

	if (!opt || !cfg || !res)
		return 0;
	walk_init(res);
	if (len > OPT_MAX)
		len = OPT_MAX;
	for (pos = 0; pos < OPT_MAX; pos++) {
		if (pos >= len)
			break;
		if (pos != next)
			continue;
		next = walk_step(opt, pos, len, cfg, res);
		if (!next)
			break;
	}
	return 0;
}

/*
 * The same walk through bpf_loop (5.17+): one callback call per option, and the verifier
 * checks the callback once instead of every position of the unrolled loop.
 */
struct walk_ctx {
	const __u8 *opt;
	const struct toa_config *cfg;
	struct parse_res *res;
	__u32 pos;
	__u32 len;
};

static long walk_cb(__u32 index, void *data)
{
	struct walk_ctx *c = data;
	__u32 pos = c->pos, len = c->len;

	(void)index;
	if (!c->opt || !c->cfg || !c->res || len > OPT_MAX || pos >= len)
		return 1;
	c->pos = walk_step(c->opt, pos, len, c->cfg, c->res);
	return c->pos ? 0 : 1;
}

static __always_inline void parse_options_loop(const __u8 *opt, __u32 len, const struct toa_config *cfg,
					       struct parse_res *res)
{
	struct walk_ctx c = { .opt = opt, .cfg = cfg, .res = res, .pos = 0, .len = len };

	walk_init(res);
	if (!len)
		return;
	if (c.len > OPT_MAX)
		c.len = OPT_MAX;
	bpf_loop(OPT_MAX, walk_cb, &c, 0);
}

/* The walk for this program variant: bpf_loop, or the static loop (legacy). */
static __always_inline void walk(int legacy, const __u8 *opt, __u32 len, const struct toa_config *cfg,
				 struct parse_res *res)
{
	if (legacy)
		parse_options(opt, len, cfg, res);
	else
		parse_options_loop(opt, len, cfg, res);
}

/* The entry of the valid option of TYPE that starts at opt[pos]. */
static __always_inline void fill_entry(const __u8 *opt, __u32 pos, __u32 type, struct toa_sk_entry *e)
{
	__u32 k;

	e->type = type;
	e->kind = opt[pos & (OPT_BUF - 1)];
	e->port = (__u16)opt[(pos + 2) & (OPT_BUF - 1)] | ((__u16)opt[(pos + 3) & (OPT_BUF - 1)] << 8);
#pragma clang loop unroll(full)
	for (k = 0; k < 16; k++)
		e->addr[k] = (type == TOA_TYPE_NAT64 || k < 4) ? opt[(pos + 4 + k) & (OPT_BUF - 1)] : 0;
}

static __always_inline int trusted_v4(const struct toa_config *cfg, __u32 saddr)
{
	__u32 n = cfg->n_trusted, i;

	for (i = 0; i < TOA_MAX_TRUSTED; i++) {
		if (i >= n)
			break;
		if ((saddr & cfg->trusted4[i].mask) == cfg->trusted4[i].addr)
			return 1;
	}
	return 0;
}

/* An IPv6 balancer against the IPv6 entries of trusted_sources (a[] in network order). */
static __always_inline int trusted_v6(const struct toa_config *cfg, const __u32 *a)
{
	__u32 n = cfg->n_trusted6, i;

	for (i = 0; i < TOA_MAX_TRUSTED; i++) {
		const struct toa_cidr6 *c = &cfg->trusted6[i];

		if (i >= n)
			break;
		if ((a[0] & c->mask[0]) == c->addr[0] && (a[1] & c->mask[1]) == c->addr[1] &&
		    (a[2] & c->mask[2]) == c->addr[2] && (a[3] & c->mask[3]) == c->addr[3])
			return 1;
	}
	return 0;
}

/* kmod/toa_parse.c toa_addr_check(), without the host's own addresses (no FIB lookup here). */
static __always_inline int addr_ok(const struct toa_sk_entry *e)
{
	const __u8 *a = e->addr;
	__u32 i, zero10 = 1, zero15 = 1;

	if (e->type == TOA_TYPE_IPV4)
		return a[0] != 0 && a[0] != 127 && (a[0] & 0xf0) != 0xe0 && (a[0] & 0xf0) != 0xf0;
	for (i = 0; i < 10; i++)
		zero10 &= a[i] == 0;
	for (i = 0; i < 15; i++)
		zero15 &= a[i] == 0;
	if (zero15 && (a[15] == 0 || a[15] == 1))
		return 0;	/* :: and ::1 */
	if (a[0] == 0xff)
		return 0;	/* multicast */
	if (zero10 && a[10] == 0xff && a[11] == 0xff)
		return 0;	/* IPv4-mapped */
	return 1;
}

/*
 * The rules of one parsed segment (kmod/README.md "Which option wins"), in the module's order:
 * malformed counted, trust, duplicates, address. Returns the entry to use, or NULL.
 */
static __always_inline const struct toa_sk_entry *
judge(const __u8 *opt, struct parse_res *res, const struct toa_config *cfg, const __u32 *trusted)
{
	struct toa_sk_entry *e = &res->e;

	count_n(TOA_CNT_TOA_MALFORMED, res->malformed);
	if (!res->n_valid)
		return 0;
	if (!*(const volatile __u32 *)trusted) {
		count(TOA_CNT_TOA_UNTRUSTED);
		return 0;
	}
	if (res->n_valid > 1 && cfg->dup_rule == TOA_DUP_LAST) {
		fill_entry(opt, res->last_pos, res->last_type, e);
	} else if (res->n_valid > 1 && cfg->dup_rule != TOA_DUP_FIRST) {
		count(TOA_CNT_TOA_AMBIGUOUS);
		return 0;
	} else {
		fill_entry(opt, res->first_pos, res->first_type, e);
	}
	if (!addr_ok(e)) {
		count(TOA_CNT_TOA_REFUSED_ADDRESS);
		return 0;
	}
	return e;
}

/*
 * Whether the peer of a passive connection (the balancer) is trusted: an IPv4 peer (also
 * IPv4-mapped on a dual-stack listener) against the IPv4 entries of trusted_sources, a native
 * IPv6 peer against the IPv6 entries, as in the module; every source when the list is empty
 * and accept_any_source is on. Returns -1 for a family that is neither.
 */
static __always_inline int source_trusted(const struct bpf_sock_ops *skops, const struct toa_config *cfg)
{
	__u32 fam = skops->family, a[4];

	if (!cfg->n_trusted && !cfg->n_trusted6 && (fam == AF_INET || fam == AF_INET6))
		return cfg->accept_any;
	/*
	 * Each context field is read into a register the compiler cannot merge with another
	 * (barrier_var): a load through a computed context pointer is refused by the verifier.
	 */
	if (fam == AF_INET) {
		a[3] = skops->remote_ip4;
		barrier_var(a[3]);
		return trusted_v4(cfg, a[3]);
	}
	if (fam != AF_INET6)
		return -1;
	a[0] = skops->remote_ip6[0];
	barrier_var(a[0]);
	a[1] = skops->remote_ip6[1];
	barrier_var(a[1]);
	a[2] = skops->remote_ip6[2];
	barrier_var(a[2]);
	a[3] = skops->remote_ip6[3];
	barrier_var(a[3]);
	if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff))
		return trusted_v4(cfg, a[3]);
	return trusted_v6(cfg, a);
}

static __always_inline void handle_listen(struct bpf_sock_ops *skops)
{
	struct toa_config *cfg = config();
	int one = 1;

	if (!cfg || !port_in_scope(cfg, skops->local_port))
		return;
	/* The SYN's options are read from the saved SYN when the connection is established. */
	bpf_setsockopt(skops, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
}

static __always_inline void handle_established(struct bpf_sock_ops *skops, int legacy)
{
	struct toa_config *cfg = config();
	const struct toa_sk_entry *use = 0;
	struct toa_sk_entry *st;
	struct bpf_sock *sk;
	struct scratch *w;
	__u32 n = 0, k, zero = 0;
	int ret, trusted;

	if (!cfg || !port_in_scope(cfg, skops->local_port))
		return;
	trusted = source_trusted(skops, cfg);
	if (trusted < 0)
		return;
	w = bpf_map_lookup_elem(&toa_scratch, &zero);
	if (!w)
		return;
	/* Through memory: a register would split every path below into a trusted and an untrusted one. */
	*(volatile __u32 *)&w->trusted = trusted;

	/*
	 * The final ACK: [skb_data, skb_data_end) is its whole TCP header. The option length comes
	 * from the header's data offset.
	 */
	{
		__u8 *data = (__u8 *)(long)skops->skb_data;
		__u8 *end = (__u8 *)(long)skops->skb_data_end;
		__u32 x;

		if (data + 20 > end)
			return;
		/*
		 * TCP Fast Open: the child is made from the SYN (with data), so this segment is the
		 * SYN; its option counts as the SYN's and the saved SYN is not walked a second time.
		 */
		*(volatile __u32 *)&w->is_syn = (data[13] >> 1) & 1;
		n = ((__u32)(data[12] >> 4)) * 4;
		n = n > 20 ? n - 20 : 0;
		/*
		 * The module's fast path: an ACK whose only option is the aligned timestamp (NOP,
		 * NOP, kind 8 length 10; what every Linux client sends) carries no TOA and nothing
		 * malformed, so it is neither copied nor walked, whatever the configured kinds (as
		 * in the module, kmod/toa_skb.c toa_tcp_may_matter()).
		 */
		x = (n ^ 12) | ((data[13] >> 1) & 1);	/* not a SYN (TCP Fast Open), as in the module */
		if (data + 24 <= end)
			x |= (data[20] ^ TCP_OPT_NOP) | (data[21] ^ TCP_OPT_NOP) | (data[22] ^ 8) |
			     (data[23] ^ 10);
		else
			x |= 1;
		n *= (x | -x) >> 31;	/* x == 0 (aligned timestamp only): 0, else n */
		/*
		 * The copy has no early exit: a loop leaving at each length would hand the walk 40
		 * different constants, each verified on its own.
		 */
		if (n) {
#pragma clang loop unroll(full)
			for (k = 0; k < OPT_MAX; k++) {
				__u8 b = 0;

				if (data + 20 + k + 1 <= end)
					b = data[20 + k];
				w->opt[k] = b;
			}
		}
	}
	walk(legacy, w->opt, n, cfg, &w->res);
	use = judge(w->opt, &w->res, cfg, &w->trusted);
	if (use) {
		count(*(volatile __u32 *)&w->is_syn ? TOA_CNT_SYN_PENDING_STORED : TOA_CNT_ACK_PENDING_STORED);
	} else if (!*(volatile __u32 *)&w->is_syn) {
		/* The SYN, kept by TCP_SAVE_SYN (absent for SYN cookies and earlier listeners). */
		ret = bpf_getsockopt(skops, SOL_TCP, TCP_BPF_SYN, w->synhdr, 60);
		if (ret > 20 && ret <= 60) {
			const __u8 *opt = w->synhdr + 20;
			__u32 x;

			/*
			 * The SYN every Linux client sends: MSS, SACK permitted, timestamps, NOP,
			 * window scale (20 bytes, values aside). Unless one of those kinds (2, 4, 8,
			 * 3) is a configured TOA kind, it carries no TOA and nothing malformed, and
			 * is not walked (walking it was a third of the backend's cost per
			 * connection). Without a branch, as for the ACK.
			 */
			n = (__u32)ret - 20;
			x = (n ^ 20) | (opt[0] ^ 2) | (opt[1] ^ 4) | (opt[4] ^ 4) | (opt[5] ^ 2) |
			    (opt[6] ^ 8) | (opt[7] ^ 10) | (opt[16] ^ TCP_OPT_NOP) | (opt[17] ^ 3) |
			    (opt[18] ^ 3) |
			    ((cfg->ipv4_kinds[0] | cfg->nat64_kinds[0]) &
			     ((1u << 2) | (1u << 3) | (1u << 4) | (1u << 8)));
			n *= (x | -x) >> 31;
			walk(legacy, opt, n, cfg, &w->res);
			use = judge(opt, &w->res, cfg, &w->trusted);
			if (use)
				count(TOA_CNT_SYN_PENDING_STORED);
		}
	}
	if (!use) {
		count(TOA_CNT_SYN_RECV_SOCK_NO_TOA);
		return;
	}
	sk = skops->sk;
	if (!sk)
		return;
	st = bpf_sk_storage_get(&toa_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		count(TOA_CNT_SYN_RECV_SOCK_NO_TOA);
		return;
	}
	__builtin_memcpy(st, use, sizeof(*st));
	count(TOA_CNT_SYN_RECV_SOCK_TOA);
	count(st->type == TOA_TYPE_IPV4 ? TOA_CNT_IP4_ADDRESS_ALLOC : TOA_CNT_IP6_ADDRESS_ALLOC);
	/* The state callback counts the free when the connection closes. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void handle_state(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct toa_sk_entry *st;

	if (skops->args[1] != BPF_TCP_CLOSE || !sk)
		return;
	st = bpf_sk_storage_get(&toa_sk, sk, 0, 0);
	if (!st)
		return;
	count(st->type == TOA_TYPE_IPV4 ? TOA_CNT_IP4_ADDRESS_FREE : TOA_CNT_IP6_ADDRESS_FREE);
	bpf_sk_storage_delete(&toa_sk, sk);
}

static __always_inline int sockops(struct bpf_sock_ops *skops, int legacy)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		handle_listen(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		handle_established(skops, legacy);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		handle_state(skops);
		break;
	}
	return 1;
}

/* Kernels >= 5.17: the option walk through bpf_loop. */
SEC("sockops")
int toa_sockops(struct bpf_sock_ops *skops)
{
	return sockops(skops, 0);
}

/* Older kernels (5.10): the static option walk. */
SEC("sockops")
int toa_sockops_legacy(struct bpf_sock_ops *skops)
{
	return sockops(skops, 1);
}

/* The entry of a TCP socket for getpeername, counting empty (no entry) like the module. */
static __always_inline struct toa_sk_entry *getname_entry(struct bpf_sock_addr *ctx)
{
	struct toa_sk_entry *st;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !ctx->sk)
		return 0;
	st = bpf_sk_storage_get(&toa_sk, ctx->sk, 0, 0);
	if (!st) {
		count(TOA_CNT_GETNAME_TOA_EMPTY);
		return 0;
	}
	if (st->type != TOA_TYPE_IPV4) {
		count(TOA_CNT_GETNAME_TOA_MISMATCH);
		return 0;
	}
	return st;
}

SEC("cgroup/getpeername4")
int toa_getpeername4(struct bpf_sock_addr *ctx)
{
	struct toa_sk_entry *st = getname_entry(ctx);
	__u32 a;

	if (!st)
		return 1;
	__builtin_memcpy(&a, st->addr, 4);
	ctx->user_ip4 = a;
	ctx->user_port = st->port;
	count(TOA_CNT_GETNAME_TOA_OK);
	return 1;
}

/*
 * AF_INET6 sockets: an IPv4 entry as ::ffff:a.b.c.d (either transport); a NAT64 entry as the
 * IPv6 client, but only on a connection over IPv6 (the peer the kernel wrote is not
 * IPv4-mapped): over IPv4 it is left alone and counted getname_toa_mismatch, as in the module.
 */
SEC("cgroup/getpeername6")
int toa_getpeername6(struct bpf_sock_addr *ctx)
{
	struct toa_sk_entry *st;
	__u32 a[4], p0, p1, p2;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !ctx->sk)
		return 1;
	st = bpf_sk_storage_get(&toa_sk, ctx->sk, 0, 0);
	if (!st) {
		count(TOA_CNT_GETNAME_TOA_EMPTY);
		return 1;
	}
	if (st->type == TOA_TYPE_NAT64) {
		p0 = ctx->user_ip6[0];
		barrier_var(p0);
		p1 = ctx->user_ip6[1];
		barrier_var(p1);
		p2 = ctx->user_ip6[2];
		barrier_var(p2);
		if (p0 == 0 && p1 == 0 && p2 == bpf_htonl(0xffff)) {
			count(TOA_CNT_GETNAME_TOA_MISMATCH);
			return 1;
		}
		__builtin_memcpy(a, st->addr, 16);
	} else if (st->type == TOA_TYPE_IPV4) {
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(0xffff);
		__builtin_memcpy(&a[3], st->addr, 4);
	} else {
		return 1;
	}
	/* One 4-byte context store each: clang would merge neighbours into 8-byte stores, refused. */
	ctx->user_ip6[0] = a[0];
	asm volatile("" ::: "memory");
	ctx->user_ip6[1] = a[1];
	asm volatile("" ::: "memory");
	ctx->user_ip6[2] = a[2];
	asm volatile("" ::: "memory");
	ctx->user_ip6[3] = a[3];
	asm volatile("" ::: "memory");
	ctx->user_port = st->port;
	count(TOA_CNT_GETNAME_TOA_OK);
	return 1;
}

/*
 * getsockopt(IPPROTO_IP, 4096) after the kernel answered it: only when nothing else did
 * (ENOPROTOOPT: the module is not loaded). set_errors: kernels >= 5.18 accept another error
 * in ctx->retval; older ones only 0 (anything else turns into EFAULT).
 */
static __always_inline int getsockopt_common(struct bpf_sockopt *ctx, int set_errors)
{
	struct toa_nat64_peer *peer = (void *)(long)ctx->optval;
	void *end = (void *)(long)ctx->optval_end;
	struct toa_sk_entry *st;

	if (ctx->level != IPPROTO_IP || ctx->optname != TOA_SO_GET_LOOKUP)
		return 1;
	if (ctx->retval != -ENOPROTOOPT)
		return 1;
	if (ctx->optlen < (int)sizeof(*peer)) {
		if (set_errors)
			ctx->retval = -EINVAL;
		return 1;
	}
	st = ctx->sk ? bpf_sk_storage_get(&toa_sk, ctx->sk, 0, 0) : 0;
	if (!st || st->type != TOA_TYPE_NAT64) {
		count(TOA_CNT_GETSOCKOPT_EMPTY);
		if (set_errors)
			ctx->retval = -ENOENT;
		return 1;
	}
	if ((void *)(peer + 1) > end)
		return 1;
	__builtin_memcpy(peer->saddr, st->addr, sizeof(peer->saddr));
	peer->sport = st->port;
	peer->pad = 0;
	ctx->optlen = sizeof(*peer);
	/* Two 4-byte context stores: clang would merge them into one 8-byte store, refused. */
	asm volatile("" ::: "memory");
	ctx->retval = 0;
	count(TOA_CNT_GETSOCKOPT_OK);
	return 1;
}

SEC("cgroup/getsockopt")
int toa_getsockopt(struct bpf_sockopt *ctx)
{
	return getsockopt_common(ctx, 1);
}

SEC("cgroup/getsockopt")
int toa_getsockopt_legacy(struct bpf_sockopt *ctx)
{
	return getsockopt_common(ctx, 0);
}
