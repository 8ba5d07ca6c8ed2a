/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The maps that the toa-ebpf loader fills, pins by name under /sys/fs/bpf/toa/ and reads
 * (ebpf/src/lib.rs MAPS): the parameters, the per-CPU counters and the per-socket entries.
 * Defined here, not in toa.bpf.c, so that every object the loader attaches (also the bench's
 * hook floor, tests/vm/guest/hook_floor.bpf.c) has the same maps. One definition per object:
 * include from one .bpf.c file only.
 */
#ifndef TOA_MAPS_H
#define TOA_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "toa_ebpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} toa_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TOA_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} toa_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct toa_sk_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} toa_sk SEC(".maps");

#endif /* TOA_MAPS_H */
