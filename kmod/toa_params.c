// SPDX-License-Identifier: GPL-2.0
/*
 * Module parameters ipv4_kinds, nat64_kinds, trusted_sources, accept_any_source, ports and
 * dup_rule.
 *
 * All are writable at runtime through /sys/module/toa/parameters/. A write is parsed
 * and validated completely before anything changes; invalid input returns -EINVAL with a
 * log line naming the bad token and the old value stays. The configuration the hooks read
 * is published with RCU. It lives in two static slots: a writer fills the unused slot,
 * publishes it and waits for a grace period, after which the previous slot has no readers
 * and becomes the unused one. Nothing is allocated, so nothing leaks when a later parameter
 * makes the load fail, and unload has nothing to free.
 */
#define pr_fmt(fmt) "toa: " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/string.h>
#include "toa.h"

#define TOA_DEFAULT_IPV4_KIND	200
#define TOA_DEFAULT_NAT64_KIND	253

static struct toa_config toa_cfg_slots[2] = {
	[0] = {
		.kinds = {
			.ipv4 = { [TOA_DEFAULT_IPV4_KIND >> 5] =
				  1u << (TOA_DEFAULT_IPV4_KIND & 31) },
			.nat64 = { [TOA_DEFAULT_NAT64_KIND >> 5] =
				   1u << (TOA_DEFAULT_NAT64_KIND & 31) },
		},
		.ipv4_list = { TOA_DEFAULT_IPV4_KIND },
		.nat64_list = { TOA_DEFAULT_NAT64_KIND },
		.n_ipv4 = 1,
		.n_nat64 = 1,
	},
};
static unsigned int toa_cfg_cur;
static DEFINE_MUTEX(toa_cfg_lock);

struct toa_config __rcu *toa_cfg = RCU_INITIALIZER(&toa_cfg_slots[0]);

/*
 * Trust is explicit: with no trusted_sources nothing is trusted unless accept_any_source is
 * set (then every source is). A non-empty list always applies, whatever accept_any_source.
 */
bool toa_config_trusted_v4(const struct toa_config *cfg, __be32 saddr)
{
	return toa_trusted_v4(cfg->trusted, cfg->n_trusted, cfg->accept_any, (const u8 *)&saddr);
}

bool toa_config_trusted_v6(const struct toa_config *cfg, const struct in6_addr *saddr)
{
	return toa_trusted_v6(cfg->trusted, cfg->n_trusted, cfg->accept_any, saddr->s6_addr);
}

bool toa_config_port_in_scope(const struct toa_config *cfg, __be16 lport)
{
	return !cfg->n_ports || test_bit(ntohs(lport), cfg->ports);
}

/* Which list a kinds parameter edits; the address is the parameter's arg. */
static u8 toa_param_ipv4 = TOA_TYPE_IPV4;
static u8 toa_param_nat64 = TOA_TYPE_NAT64;

static void toa_rebuild_kinds(struct toa_config *c)
{
	unsigned int i;

	toa_kinds_clear(&c->kinds);
	for (i = 0; i < c->n_ipv4; i++)
		toa_kinds_add(c->kinds.ipv4, c->ipv4_list[i]);
	for (i = 0; i < c->n_nat64; i++)
		toa_kinds_add(c->kinds.nat64, c->nat64_list[i]);
}

/*
 * Runs parse() on a copy of the current configuration in the unused slot and publishes
 * it when parse() succeeds. Process context only (sysfs write or module load).
 */
static int toa_cfg_update(const char *val, const char *name,
			  int (*parse)(struct toa_config *next, char *s, const char *name))
{
	struct toa_config *next;
	char *buf;
	int err;

	buf = kstrdup(val, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;

	mutex_lock(&toa_cfg_lock);
	next = &toa_cfg_slots[toa_cfg_cur ^ 1];
	*next = toa_cfg_slots[toa_cfg_cur];
	err = parse(next, strim(buf), name);
	if (!err) {
		toa_rebuild_kinds(next);
		rcu_assign_pointer(toa_cfg, next);
		toa_cfg_cur ^= 1;
		/* After this nobody reads the previous slot: the next writer may reuse it. */
		synchronize_rcu();
	}
	mutex_unlock(&toa_cfg_lock);
	kfree(buf);
	return err;
}

static int toa_parse_kinds_into(u8 *list, u16 *n, char *s, const char *name)
{
	size_t bad_off, bad_len;
	int count;

	/* Empty: this address type is disabled. */
	count = toa_parse_kind_list(s, strlen(s), list, 256, &bad_off, &bad_len);
	if (count < 0) {
		pr_warn("%s: invalid option kind '%.*s' (expected a comma list of integers %d..%d)\n",
			name, (int)bad_len, s + bad_off, TOA_KIND_MIN, TOA_KIND_MAX);
		return -EINVAL;
	}
	*n = count;
	return 0;
}

static int toa_parse_ipv4_kinds(struct toa_config *next, char *s, const char *name)
{
	return toa_parse_kinds_into(next->ipv4_list, &next->n_ipv4, s, name);
}

static int toa_parse_nat64_kinds(struct toa_config *next, char *s, const char *name)
{
	return toa_parse_kinds_into(next->nat64_list, &next->n_nat64, s, name);
}

static int toa_kinds_set(const char *val, const struct kernel_param *kp)
{
	bool v4 = *(const u8 *)kp->arg == TOA_TYPE_IPV4;

	return toa_cfg_update(val, kp->name, v4 ? toa_parse_ipv4_kinds : toa_parse_nat64_kinds);
}

static int toa_kinds_get(char *buf, const struct kernel_param *kp)
{
	bool v4 = *(const u8 *)kp->arg == TOA_TYPE_IPV4;
	const struct toa_config *c;
	const u8 *list;
	unsigned int i, n;
	int len = 0;

	mutex_lock(&toa_cfg_lock);
	c = &toa_cfg_slots[toa_cfg_cur];
	list = v4 ? c->ipv4_list : c->nat64_list;
	n = v4 ? c->n_ipv4 : c->n_nat64;
	for (i = 0; i < n; i++)
		len += scnprintf(buf + len, PAGE_SIZE - len, "%s%u", i ? "," : "", list[i]);
	mutex_unlock(&toa_cfg_lock);
	len += scnprintf(buf + len, PAGE_SIZE - len, "\n");
	return len;
}

static const struct kernel_param_ops toa_kinds_ops = {
	.set = toa_kinds_set,
	.get = toa_kinds_get,
};

module_param_cb(ipv4_kinds, &toa_kinds_ops, &toa_param_ipv4, 0644);
MODULE_PARM_DESC(ipv4_kinds,
		 "TCP option kinds carrying an IPv4 TOA (length 8), comma list of 2..255 (default 200)");
module_param_cb(nat64_kinds, &toa_kinds_ops, &toa_param_nat64, 0644);
MODULE_PARM_DESC(nat64_kinds,
		 "TCP option kinds carrying a NAT64 TOA (length 20), comma list of 2..255 (default 253)");

/* Parses "a.b.c.d[/n],x:y::z[/n],..."; rejects host bits set beyond the prefix. */
static int toa_parse_trusted(struct toa_config *next, char *s, const char *name)
{
	enum toa_cidr_error why;
	size_t off, len;
	int n;

	/* Empty: no source is trusted (unless accept_any_source). */
	n = toa_parse_cidr_list(s, strlen(s), next->trusted, TOA_MAX_TRUSTED, &off, &len, &why);
	if (n >= 0) {
		next->n_trusted = n;
		return 0;
	}
	switch (why) {
	case TOA_CIDR_TOO_MANY:
		pr_warn("%s: too many entries at '%.*s' (at most %d)\n", name, (int)len, s + off,
			TOA_MAX_TRUSTED);
		break;
	case TOA_CIDR_BAD_PREFIX:
		pr_warn("%s: invalid prefix length in '%.*s' (expected /0../32 for IPv4, /0../128 for IPv6)\n",
			name, (int)len, s + off);
		break;
	case TOA_CIDR_HOST_BITS:
		pr_warn("%s: '%.*s' has address bits set beyond the prefix (write the network address)\n",
			name, (int)len, s + off);
		break;
	default:
		pr_warn("%s: invalid address in '%.*s' (expected IPv4 or IPv6 CIDR, e.g. 10.0.0.0/8 or fd00::/64)\n",
			name, (int)len, s + off);
		break;
	}
	return -EINVAL;
}

static int toa_trusted_set(const char *val, const struct kernel_param *kp)
{
	return toa_cfg_update(val, kp->name, toa_parse_trusted);
}

static int toa_trusted_get(char *buf, const struct kernel_param *kp)
{
	const struct toa_config *c;
	unsigned int i;
	int len = 0;

	mutex_lock(&toa_cfg_lock);
	c = &toa_cfg_slots[toa_cfg_cur];
	for (i = 0; i < c->n_trusted; i++) {
		const struct toa_cidr *t = &c->trusted[i];

		if (t->family == TOA_CIDR_V4)
			len += scnprintf(buf + len, PAGE_SIZE - len, "%s%pI4/%u", i ? "," : "",
					 t->addr, t->prefix);
		else
			len += scnprintf(buf + len, PAGE_SIZE - len, "%s%pI6c/%u", i ? "," : "",
					 t->addr, t->prefix);
	}
	mutex_unlock(&toa_cfg_lock);
	len += scnprintf(buf + len, PAGE_SIZE - len, "\n");
	return len;
}

static const struct kernel_param_ops toa_trusted_ops = {
	.set = toa_trusted_set,
	.get = toa_trusted_get,
};

module_param_cb(trusted_sources, &toa_trusted_ops, NULL, 0644);
MODULE_PARM_DESC(trusted_sources,
		 "Accept TOA only from these balancer networks: comma list of IPv4/IPv6 CIDRs (empty = no source unless accept_any_source=1)");

/* ---- accept_any_source ---- */

static int toa_parse_accept_any(struct toa_config *next, char *s, const char *name)
{
	bool v;

	if (kstrtobool(s, &v)) {
		pr_warn("%s: invalid value '%s' (expected 0 or 1)\n", name, s);
		return -EINVAL;
	}
	next->accept_any = v;
	return 0;
}

static int toa_accept_any_set(const char *val, const struct kernel_param *kp)
{
	return toa_cfg_update(val, kp->name, toa_parse_accept_any);
}

static int toa_accept_any_get(char *buf, const struct kernel_param *kp)
{
	bool v;

	mutex_lock(&toa_cfg_lock);
	v = toa_cfg_slots[toa_cfg_cur].accept_any;
	mutex_unlock(&toa_cfg_lock);
	return scnprintf(buf, PAGE_SIZE, "%d\n", v);
}

static const struct kernel_param_ops toa_accept_any_ops = {
	.set = toa_accept_any_set,
	.get = toa_accept_any_get,
};

module_param_cb(accept_any_source, &toa_accept_any_ops, NULL, 0644);
MODULE_PARM_DESC(accept_any_source,
		 "1: accept TOA from every source while trusted_sources is empty (default 0: trust nothing)");

/* ---- ports ---- */

/* Parses "80,443,8000-8100" (ports 1..65535); empty = every port. */
static int toa_parse_ports(struct toa_config *next, char *s, const char *name)
{
	size_t bad_off, bad_len;
	int n, i;

	n = toa_parse_port_list(s, strlen(s), next->port_list, TOA_MAX_PORT_RANGES, &bad_off,
				&bad_len);
	if (n < 0) {
		pr_warn("%s: invalid port or range '%.*s' (expected at most %d entries of 1..65535 or LOW-HIGH with LOW <= HIGH)\n",
			name, (int)bad_len, s + bad_off, TOA_MAX_PORT_RANGES);
		return -EINVAL;
	}
	next->n_ports = n;
	bitmap_zero(next->ports, 65536);
	for (i = 0; i < n; i++)
		bitmap_set(next->ports, next->port_list[i].lo,
			   next->port_list[i].hi - next->port_list[i].lo + 1);
	return 0;
}

static int toa_ports_set(const char *val, const struct kernel_param *kp)
{
	return toa_cfg_update(val, kp->name, toa_parse_ports);
}

static int toa_ports_get(char *buf, const struct kernel_param *kp)
{
	const struct toa_config *c;
	unsigned int i;
	int len = 0;

	mutex_lock(&toa_cfg_lock);
	c = &toa_cfg_slots[toa_cfg_cur];
	for (i = 0; i < c->n_ports; i++) {
		const struct toa_port_range *r = &c->port_list[i];

		if (r->lo == r->hi)
			len += scnprintf(buf + len, PAGE_SIZE - len, "%s%u", i ? "," : "", r->lo);
		else
			len += scnprintf(buf + len, PAGE_SIZE - len, "%s%u-%u", i ? "," : "",
					 r->lo, r->hi);
	}
	mutex_unlock(&toa_cfg_lock);
	len += scnprintf(buf + len, PAGE_SIZE - len, "\n");
	return len;
}

static const struct kernel_param_ops toa_ports_ops = {
	.set = toa_ports_set,
	.get = toa_ports_get,
};

module_param_cb(ports, &toa_ports_ops, NULL, 0644);
MODULE_PARM_DESC(ports,
		 "Local listening ports whose connections may carry TOA: comma list of ports and LOW-HIGH ranges (empty = every port)");

/* ---- dup_rule ---- */

static const char *const toa_dup_rule_names[] = {
	[TOA_DUP_REJECT] = "reject",
	[TOA_DUP_FIRST] = "first",
	[TOA_DUP_LAST] = "last",
};

static int toa_parse_dup_rule(struct toa_config *next, char *s, const char *name)
{
	int i = match_string(toa_dup_rule_names, ARRAY_SIZE(toa_dup_rule_names), s);

	if (i < 0) {
		pr_warn("%s: invalid value '%s' (expected reject, first or last)\n", name, s);
		return -EINVAL;
	}
	next->dup_rule = i;
	return 0;
}

static int toa_dup_rule_set(const char *val, const struct kernel_param *kp)
{
	return toa_cfg_update(val, kp->name, toa_parse_dup_rule);
}

static int toa_dup_rule_get(char *buf, const struct kernel_param *kp)
{
	u8 v;

	mutex_lock(&toa_cfg_lock);
	v = toa_cfg_slots[toa_cfg_cur].dup_rule;
	mutex_unlock(&toa_cfg_lock);
	return scnprintf(buf, PAGE_SIZE, "%s\n", toa_dup_rule_names[v]);
}

static const struct kernel_param_ops toa_dup_rule_ops = {
	.set = toa_dup_rule_set,
	.get = toa_dup_rule_get,
};

module_param_cb(dup_rule, &toa_dup_rule_ops, NULL, 0644);
MODULE_PARM_DESC(dup_rule,
		 "Several valid TOA options in one segment: reject (default: none is used, counted toa_ambiguous), first or last");
