#!/usr/bin/env bash
# Builds the TOA eBPF object with Debian's clang (-target bpf, BTF from -g; no kernel headers:
# the program contexts are UAPI, so one object serves every kernel >= 5.10).
#
#   ebpf/bpf/build.sh OUT.o [SOURCE.c]
#
# SOURCE.c defaults to toa.bpf.c here; another source (the bench's hook floor) may include
# toa_ebpf.h.
#
# Installs clang, libbpf-dev (bpf_helpers.h) and linux-libc-dev on first use.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/lib/deps.sh
. "$HERE/../../tests/lib/deps.sh"

ebpf_build_needs() { need_apt clang llvm libbpf-dev linux-libc-dev; }

[ $# -eq 1 ] || [ $# -eq 2 ] || {
	echo "usage: $0 OUT.o [SOURCE.c]" >&2
	exit 2
}
toa_deps_step ebpf_build_needs
out=$1
src=${2:-$HERE/toa.bpf.c}
[ -f "$src" ] || {
	echo "$0: no BPF source at $src" >&2
	exit 2
}
mkdir -p "$(dirname "$out")"
multiarch="$(uname -m)-linux-gnu"
clang -target bpf -O2 -g -Wall -Wextra -Werror \
	-I"/usr/include/$multiarch" -I"$HERE" \
	-c "$src" -o "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
