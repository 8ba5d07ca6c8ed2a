/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types for the TCP option parser, so that toa_parse.c compiles unchanged in the kernel
 * and in userspace (fuzzer and unit driver). The parser uses nothing but these.
 */
#ifndef TOA_PARSE_COMPAT_H
#define TOA_PARSE_COMPAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stddef.h>
#include <stdint.h>
#endif

#endif /* TOA_PARSE_COMPAT_H */
