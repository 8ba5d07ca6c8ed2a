#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The agent's build root from the node's own distribution (issue 10, item 2) with the real tools
# and a real signed mirror, on this machine, without a guest: nothing is loaded into any kernel.
#
#   tests/buildroot/local.sh [SUITE]        (default bullseye: Debian 11, 5.10, gcc-10)
#
# 1. A local apt repository of SUITE (tests/buildroot/mirror.sh, shared with tests/vm/agent.sh),
#    built from the .debs the VM harness already downloads (tests/vm/lib/suites.sh: the suite's
#    debootstrap cache, the kernel's header packages and their compiler package), indexed with
#    apt-ftparchive and signed with a gpg key made for this run, served by python3 -m
#    http.server on a free loopback port.
# 2. A node root: /etc/os-release of SUITE, a deb822 source for that mirror with signed-by
#    pointing at the run's key (exported into the node root), an empty trusted.gpg.d, and no
#    kernel headers.
# 3. node-agent/examples/buildroot_check.rs runs the agent's build-root code (buildroot::plan,
#    buildroot::ensure with mmdebstrap and apt's signature checks against the node's keys only,
#    build::build under chroot) for the suite's kernel release: the root is fetched and the toa
#    module is built in it with the kernel's own gcc; a second run reuses the cached root; a
#    mirror on a closed port gives MirrorUnreachable naming it; a node that does not trust the
#    mirror's key gives BuildRootFailed.
# Ends with `N passed, M failed`.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SUITE=${1:-bullseye}
# shellcheck source=../vm/lib/suites.sh
. "$REPO/tests/vm/lib/suites.sh"

die() {
	echo "error: $*" >&2
	exit 1
}

# shellcheck source=mirror.sh
. "$HERE/mirror.sh"

# What this suite installs before first use: mmdebstrap (the agent image's bootstrapper, run
# here by the agent's code), the mirror's tools, debootstrap for the suite's package cache.
local_needs() {
	need_apt mmdebstrap
	mirror_needs
	suites_needs
}
toa_deps_step local_needs

WORK=$TOA_CACHE_DIR/buildroot-local/$SUITE
passes=0
fails=0
ok() {
	echo "ok - $1"
	passes=$((passes + 1))
}
nok() {
	echo "not ok - $1${2:+: $2}"
	fails=$((fails + 1))
}

MIRROR_PID=
trap 'mirror_stop "$WORK/mirror"' EXIT

rm -rf "$WORK"
mkdir -p "$WORK/node/etc/apt/sources.list.d" "$WORK/node/etc/apt/trusted.gpg.d" \
	"$WORK/node/usr/share/keyrings" "$WORK/cache"
t0=$SECONDS

# ---- the suite's kernel release (its linux-headers-amd64) and the signed mirror
headers_meta=$(suite_apt "$SUITE" apt-cache depends linux-headers-amd64)
kver=$(awk '$1 == "Depends:" && $2 ~ /^linux-headers-[0-9].*-amd64$/ { sub(/^linux-headers-/, "", $2); print $2; exit }' <<<"$headers_meta")
[ -n "$kver" ] || die "no linux-headers-*-amd64 behind linux-headers-amd64 in $SUITE: $headers_meta"
mirror_build "$SUITE" "$kver" "$WORK/mirror" || die "cannot build the $SUITE mirror"
gcc_major=$MIRROR_GCC_MAJOR
echo "# $SUITE: kernel $kver, gcc-$gcc_major"
mirror_export_key "$WORK/mirror" "$WORK/node/usr/share/keyrings/toa-test-mirror.gpg" || die "no mirror key"
# A second key that signs nothing: the "untrusted" node trusts only it.
mirror_other_key "$WORK/mirror" "$WORK/node/usr/share/keyrings/toa-other.gpg" || die "no second key"
echo "# mirror: $MIRROR_DEBS packages, signed ($((SECONDS - t0))s)"
mirror_serve "$WORK/mirror" || die "cannot serve the mirror"
MIRROR=http://127.0.0.1:$MIRROR_PORT

# ---- the node root: os-release, its apt source for the mirror, no headers
codename_line=VERSION_CODENAME=$SUITE
[ "$SUITE" = sid ] && codename_line=
printf 'PRETTY_NAME="Debian GNU/Linux (%s)"\nNAME="Debian GNU/Linux"\nID=debian\n%s\n' "$SUITE" "$codename_line" \
	>"$WORK/node/etc/os-release"
write_source() {
	printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/%s\n' \
		"$1" "$SUITE" "$2" >"$WORK/node/etc/apt/sources.list.d/debian.sources"
}
write_source "$MIRROR" toa-test-mirror.gpg
# The kernel's banner, as the node's /proc/version shows it (the agent reads the compiler there
# when the node has no headers).
mkdir -p "$WORK/node/proc"
printf 'Linux version %s (debian-kernel@lists.debian.org) (gcc-%s (Debian) %s.0.0, GNU ld) #1 SMP Debian\n' \
	"$kver" "$gcc_major" "$gcc_major" >"$WORK/node/proc/version"

cargo build -q -p toa-node-agent --example buildroot_check --manifest-path "$REPO/Cargo.toml"
target_dir=${CARGO_TARGET_DIR:-$REPO/target}
check_bin=$target_dir/debug/examples/buildroot_check
agent() {
	"$check_bin" --host-root "$WORK/node" --release "$kver" --cache-dir "$WORK/cache" \
		--module-src "$REPO/kmod" --timeout 1800 "$@"
}

# ---- 1: fetch the root and build in it
t1=$SECONDS
rc=0
out=$(agent 2>"$WORK/run1.err") || rc=$?
printf '%s\n' "$out" | sed 's/^/#   /'
if [ "$rc" = 0 ] && grep -q '^path=build-root .* fetched=true' <<<"$out"; then
	ok "$kver: no headers on the node, the image's path is impossible: build root fetched from the node's $SUITE mirror ($((SECONDS - t1))s)"
else
	nok "$kver: build root fetched" "rc=$rc $(tail -n 5 "$WORK/run1.err" | tr '\n' ' ')"
fi
if grep -q "^built srcversion=[0-9A-F]* vermagic=$kver " <<<"$out"; then
	ok "$kver: toa.ko built in the root with gcc-$gcc_major, vermagic $kver"
else
	nok "$kver: toa.ko built in the root" "$out"
fi
root=$WORK/cache/buildroot/debian-$SUITE-$kver-gcc$gcc_major
if [ -x "$root/usr/bin/gcc-$gcc_major" ] && [ -f "$root/.toa-build-root.json" ] &&
	[ -z "$(find "$WORK/cache/buildroot" -maxdepth 1 -name '.tmp-*')" ]; then
	ok "the root is cached as $(basename "$root") with its stamp, nothing temporary left"
else
	nok "the root is cached with its stamp" "$(find "$WORK/cache/buildroot" -maxdepth 1 -printf '%f ')"
fi

# ---- 2: a second run reuses the cached root
t1=$SECONDS
rc=0
out=$(agent 2>"$WORK/run2.err") || rc=$?
if [ "$rc" = 0 ] && grep -q '^path=build-root .* fetched=false' <<<"$out" && grep -q '^built ' <<<"$out"; then
	ok "a second build reuses the validated root ($((SECONDS - t1))s)"
else
	nok "a second build reuses the root" "rc=$rc $out"
fi

# ---- 3: the mirror unreachable (a closed loopback port; the override names it)
rm -rf "$WORK/cache/buildroot"
closed=$(mirror_free_port)
rc=0
out=$(agent --mirror "http://127.0.0.1:$closed" 2>"$WORK/run3.err") || rc=$?
printf '%s\n' "$out" | sed 's/^/#   /'
if [ "$rc" = 3 ] && grep -q "^reason=MirrorUnreachable .*http://127.0.0.1:$closed.*agent.buildRootMirror" <<<"$out"; then
	ok "mirror unreachable: MirrorUnreachable names http://127.0.0.1:$closed and the remedy"
else
	nok "mirror unreachable: MirrorUnreachable" "rc=$rc $out"
fi

# ---- 4: the node does not trust the mirror's key
write_source "$MIRROR" toa-other.gpg
rc=0
out=$(agent 2>"$WORK/run4.err") || rc=$?
printf '%s\n' "$out" | sed 's/^/#   /'
if [ "$rc" = 3 ] && grep -q '^reason=BuildRootFailed .*not signed by a key the node trusts' <<<"$out"; then
	ok "a mirror signed by a key the node does not trust: BuildRootFailed, nothing fetched"
else
	nok "untrusted mirror: BuildRootFailed" "rc=$rc $out"
fi
if [ -z "$(find "$WORK/cache/buildroot" -mindepth 1 -maxdepth 1 2>/dev/null)" ]; then
	ok "failed fetches leave no root behind"
else
	nok "failed fetches leave no root behind" "$(find "$WORK/cache/buildroot" -maxdepth 1 -printf '%f ')"
fi

echo "# total $((SECONDS - t0))s"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
