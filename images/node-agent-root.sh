#!/usr/bin/env bash
# The root filesystem of the toa-node-agent image, without Docker: images/build.sh imports it
# into buildah, and the guest suites (tests/vm/agent.sh) run the agent from this same root under
# an OCI runtime, so the tests meet exactly what the image contains.
#
#   images/node-agent-root.sh base              prints the path of the cached package root:
#                                               `debootstrap --variant=minbase trixie` with
#                                               images/node-agent.packages (keyed by that list)
#   images/node-agent-root.sh stage DIR BINARY  writes the agent's own files under DIR:
#                                               usr/bin/toa-node-agent (BINARY, static), the
#                                               module sources at usr/share/toa-node-agent/kmod
#                                               and the compiled eBPF backend at
#                                               usr/share/toa-node-agent/ebpf/toa.bpf.o
#                                               (ebpf/bpf/build.sh, Debian's clang; no compiler
#                                               reaches the image for it)
#
# The image is the base root plus the staged files (the Containerfile adds only metadata: the
# entrypoint /usr/bin/toa-node-agent, port 9101). /usr/src stays empty: the DaemonSet mounts the
# host's headers there. Another compiler major needs another suite: TOA_NODE_AGENT_SUITE (default
# trixie) and TOA_NODE_AGENT_PACKAGES (default images/node-agent.packages), e.g. bookworm with a
# list naming gcc-11 and gcc-12. Needs root (debootstrap). The archive is this machine's Debian mirror
# (apt sources), or TOA_DEBIAN_MIRROR. Cached under $TOA_CACHE_DIR/images.
set -euo pipefail
shopt -s inherit_errexit
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SUITE=${TOA_NODE_AGENT_SUITE:-trixie}
PACKAGES=${TOA_NODE_AGENT_PACKAGES:-$HERE/node-agent.packages}
TOA_CACHE_DIR=${TOA_CACHE_DIR:-$HOME/.cache/toa-operator}
CACHE=$TOA_CACHE_DIR/images
ENTRYPOINT=/usr/bin/toa-node-agent

die() {
	echo "node-agent-root.sh: error: $*" >&2
	exit 1
}
log() { echo "node-agent-root.sh: $*" >&2; }

# Prints the Debian archive address this machine's apt uses (deb822 or one-line sources).
debian_mirror() {
	local m=${TOA_DEBIAN_MIRROR:-}
	[ -n "$m" ] || m=$(awk '/^URIs:/ && $2 !~ /security/ && $2 ~ /debian/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ && $0 ~ /debian/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
	[ -n "$m" ] || die "no Debian archive in this machine's apt sources: set TOA_DEBIAN_MIRROR"
	echo "$m"
}

packages() {
	local list
	list=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PACKAGES") ||
		die "cannot read $PACKAGES"
	[ -n "$list" ] || die "$PACKAGES lists no package"
	echo "$list"
}

base() {
	local pkgs key root tmp mirror inc
	pkgs=$(packages)
	key=$(printf '%s\n%s\n' "$SUITE" "$pkgs" | sha256sum | cut -c1-12)
	root=$CACHE/node-agent-root-$SUITE-$key
	if [ -f "$root/.toa-ok" ]; then
		echo "$root"
		return
	fi
	[ "$(id -u)" = 0 ] || die "needs root (debootstrap): run it with sudo"
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
	mkdir -p "$CACHE" "$CACHE/debootstrap-debs-$SUITE"
	mirror=$(debian_mirror)
	inc=$(tr '\n' ',' <<<"$pkgs")
	inc=${inc%,}
	tmp=$root.tmp.$$
	rm -rf "$tmp"
	log "debootstrap --variant=minbase $SUITE with $(tr '\n' ' ' <<<"$pkgs")from $mirror (a few minutes)"
	if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
		--cache-dir="$CACHE/debootstrap-debs-$SUITE" --include="$inc" \
		"$SUITE" "$tmp" "$mirror" >"$root.log" 2>&1; then
		tail -n 20 "$root.log" >&2
		rm -rf "$tmp"
		die "debootstrap failed, see $root.log"
	fi
	rm -f "$tmp/etc/apt/sources.list"
	cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<-EOS
		Types: deb
		URIs: $mirror
		Suites: $SUITE $SUITE-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOS
	# Like Debian's slim images: no downloaded lists or packages, no docs or manuals.
	rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/archives/*.deb \
		"$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/usr/share/locale/*
	[ -z "$(ls -A "$tmp/usr/src")" ] || die "/usr/src of the root must stay empty: the DaemonSet mounts the host's headers there"
	local p
	while IFS= read -r p; do
		# shellcheck disable=SC2016 # dpkg-query's format, not a shell expansion
		chroot "$tmp" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			die "package $p is not installed in $tmp (see $root.log)"
	done <<<"$pkgs"
	touch "$tmp/.toa-ok"
	mv -T "$tmp" "$root"
	log "$SUITE root ready at $root ($(du -sm "$root" | cut -f1) MB)"
	echo "$root"
}

stage() {
	local dir=$1 binary=$2
	[ -x "$binary" ] || die "agent binary $binary is missing or not executable"
	mkdir -p "$dir/usr/bin" "$dir/usr/share/toa-node-agent/kmod"
	install -m 0555 "$binary" "$dir$ENTRYPOINT"
	# The module sources exactly as the agent digests them: no build outputs, no fuzz harness.
	(cd "$ROOT/kmod" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' \
		--exclude='*.mod' --exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order \
		--exclude='*.a' --exclude=fuzz --exclude='.tmp*' -cf - .) |
		(cd "$dir/usr/share/toa-node-agent/kmod" && tar -xf -)
	[ -n "$(ls -A "$dir/usr/share/toa-node-agent/kmod")" ] || die "kmod/ has no sources"
	# The eBPF backend's object (the agent's --ebpf-object default, DEFAULT_EBPF_OBJECT).
	mkdir -p "$dir/usr/share/toa-node-agent/ebpf"
	"$ROOT/ebpf/bpf/build.sh" "$dir/usr/share/toa-node-agent/ebpf/toa.bpf.o" ||
		die "building the eBPF object (ebpf/bpf/build.sh) failed"
	chmod 0444 "$dir/usr/share/toa-node-agent/ebpf/toa.bpf.o"
}

case "${1:-}" in
base) base ;;
stage)
	[ $# -eq 3 ] || die "usage: $0 stage DIR BINARY"
	stage "$2" "$3"
	;;
entrypoint) echo "$ENTRYPOINT" ;;
*)
	sed -n '2,22p' "$0" >&2
	exit 2
	;;
esac
