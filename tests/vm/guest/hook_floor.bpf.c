// SPDX-License-Identifier: GPL-2.0
/*
 * The bench's floor (tests/vm/kmod-bench.sh): programs with the names, sections and maps of
 * ebpf/bpf/toa.bpf.c, so that the toa-ebpf loader attaches them at the same four hooks in the
 * same way, but every one returns at once. Measured beside the real programs, it shows what
 * the kernel charges for running any program at those hooks (the cgroup program array, the
 * context set-up), which no version of the TOA programs can avoid.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* The loader writes the parameters into toa_config and pins all three maps. */
#include "toa_maps.h"

SEC("sockops")
int toa_sockops(struct bpf_sock_ops *skops __attribute__((unused)))
{
	return 1;
}

SEC("sockops")
int toa_sockops_legacy(struct bpf_sock_ops *skops __attribute__((unused)))
{
	return 1;
}

SEC("cgroup/getpeername4")
int toa_getpeername4(struct bpf_sock_addr *ctx __attribute__((unused)))
{
	return 1;
}

SEC("cgroup/getpeername6")
int toa_getpeername6(struct bpf_sock_addr *ctx __attribute__((unused)))
{
	return 1;
}

SEC("cgroup/getsockopt")
int toa_getsockopt(struct bpf_sockopt *ctx __attribute__((unused)))
{
	return 1;
}

SEC("cgroup/getsockopt")
int toa_getsockopt_legacy(struct bpf_sockopt *ctx __attribute__((unused)))
{
	return 1;
}
