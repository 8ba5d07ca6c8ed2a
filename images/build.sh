#!/usr/bin/env bash
# Builds the toa-operator and toa-node-agent images into OCI archives, without a registry or a
# Docker daemon (not offline: it needs root, crates.io and Debian's archive).
#
#   images/build.sh [--out DIR] [--version V] [--skip-cargo] [--only operator|node-agent]
#
# Produces (default DIR = target/images):
#   DIR/toa-operator-V.oci.tar     FROM scratch: the static musl binary, user 65532
#   DIR/toa-node-agent-V.oci.tar   Debian trixie minbase + make, gcc-12/13/14, libelf-dev, dwarves,
#                                  kmod, bc, perl; the static agent; kmod sources at
#                                  /usr/share/toa-node-agent/kmod
# Both are tagged localhost/NAME:V inside the archive. Load them with e.g.
#   kind load image-archive DIR/toa-node-agent-V.oci.tar
#   skopeo copy oci-archive:DIR/toa-operator-V.oci.tar docker://REGISTRY/toa-operator:V
#
# How (no registry, no Docker daemon): cargo builds static musl binaries; the agent's base is a
# `debootstrap --variant=minbase trixie` root imported into a private buildah store (vfs driver,
# --isolation chroot), on which buildah runs images/node-agent.Containerfile (its RUN apt-get
# reaches Debian's archive, the only network it needs). The operator image is FROM scratch.
# The debootstrap root and the buildah store are cached in ${TOA_CACHE_DIR}/images.
# Needs root (debootstrap, chroot). Takes about 10 minutes cold on 2 cores (two release builds
# and the apt install), about 1 minute warm.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
# shellcheck source=/dev/null
source "$ROOT/tests/lib/deps.sh"

OUT=$ROOT/target/images
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/toa-operator/Chart.yaml")
SKIP_CARGO=
ONLY=
TARGET=x86_64-unknown-linux-musl
SUITE=trixie

die() {
	echo "images/build.sh: error: $*" >&2
	exit 1
}
log() { echo "images/build.sh: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--out) OUT=$(realpath -m "$2") && shift 2 ;;
	--version) VERSION=$2 && shift 2 ;;
	--skip-cargo) SKIP_CARGO=1 && shift ;;
	--only)
		case "$2" in operator | node-agent) ONLY=$2 ;; *) die "--only takes operator or node-agent, not '$2'" ;; esac
		shift 2
		;;
	-h | --help)
		sed -n '2,20p' "$0"
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[ -n "$VERSION" ] || die "cannot read appVersion from charts/toa-operator/Chart.yaml: pass --version"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot builds): run it with sudo"

CACHE=$TOA_CACHE_DIR/images
STORE=(--root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs)
mkdir -p "$OUT" "$CACHE"
need_apt buildah debootstrap musl-tools ca-certificates file cpio binutils
WORK=$(mktemp -d /tmp/toa-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# --- binaries --------------------------------------------------------------------------------
bin_dir=$ROOT/target/$TARGET/release
if [ -z "$SKIP_CARGO" ]; then
	rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
	pkgs=()
	want operator && pkgs+=(-p toa-operator)
	want node-agent && pkgs+=(-p toa-node-agent)
	log "cargo build --release --target $TARGET ${pkgs[*]}"
	cargo build --release --locked --target "$TARGET" "${pkgs[@]}" >&2
fi
for b in toa-operator toa-node-agent; do
	want "${b#toa-}" || continue
	[ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: build it (drop --skip-cargo)"
	# A dynamically linked binary would not start on the scratch base.
	if file "$bin_dir/$b" | grep -q 'dynamically linked'; then
		die "$bin_dir/$b is dynamically linked: build with --target $TARGET"
	fi
done

# --- the agent's base: a debootstrap root imported into buildah --------------------------------
# Prints the Debian archive address this machine's apt uses (deb822 or one-line sources).
debian_mirror() {
	local m=${TOA_DEBIAN_MIRROR:-}
	[ -n "$m" ] || m=$(awk '/^URIs:/ && $2 !~ /security/ && $2 ~ /debian/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$m" ] || m=$(awk '$1 == "deb" && $0 !~ /security/ && $0 ~ /debian/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
	[ -n "$m" ] || die "no Debian archive in this machine's apt sources: set TOA_DEBIAN_MIRROR"
	echo "$m"
}

base_image() {
	local mirror rootfs ref ctr mnt
	mirror=$(debian_mirror)
	ref=localhost/toa-debian-base:$SUITE
	if buildah "${STORE[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
		echo "$ref"
		return
	fi
	rootfs=$CACHE/rootfs-$SUITE
	if [ ! -f "$rootfs/.toa-ok" ]; then
		log "debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
		rm -rf "$rootfs"
		debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
			"$SUITE" "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
			die "debootstrap failed, see $CACHE/debootstrap.log"
		rm -f "$rootfs/etc/apt/sources.list"
		cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<-EOF
			Types: deb
			URIs: $mirror
			Suites: $SUITE $SUITE-updates
			Components: main
			Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

			Types: deb
			URIs: ${TOA_DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}
			Suites: $SUITE-security
			Components: main
			Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
		EOF
		# Like Debian's slim images: no downloaded lists or packages left in the base.
		rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
		touch "$rootfs/.toa-ok"
	fi
	log "importing the $SUITE root as $ref"
	ctr=$(buildah "${STORE[@]}" from scratch)
	mnt=$(buildah "${STORE[@]}" mount "$ctr")
	tar -C "$rootfs" --exclude=./.toa-ok -cf - . | tar -C "$mnt" -xf -
	buildah "${STORE[@]}" umount "$ctr" >/dev/null
	buildah "${STORE[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
	buildah "${STORE[@]}" commit --rm "$ctr" "$ref" >/dev/null
	echo "$ref"
}

# --- images ------------------------------------------------------------------------------------
# build NAME CONTEXT [BUILD-ARGS...]: Containerfile images/NAME.Containerfile -> OUT/toa-NAME-V.oci.tar
build() {
	local name=$1 ctx=$2 ref archive
	shift 2
	ref=localhost/toa-$name:$VERSION
	archive=$OUT/toa-$name-$VERSION.oci.tar
	log "buildah bud $ref"
	buildah "${STORE[@]}" bud --isolation chroot --pull=never --layers=false --format oci \
		--build-arg "VERSION=$VERSION" "$@" -f "$ROOT/images/$name.Containerfile" -t "$ref" "$ctx" >&2
	rm -f "$archive"
	buildah "${STORE[@]}" push "$ref" "oci-archive:$archive:$ref" >&2
	printf '%s\t%s\n' "$(du -h "$archive" | cut -f1)" "$archive"
}

results=()
if want operator; then
	mkdir -p "$WORK/operator"
	# Symbols are not needed at runtime (panics still name their location): a third of the size.
	strip -o "$WORK/operator/toa-operator" "$bin_dir/toa-operator"
	results+=("$(build operator "$WORK/operator")")
fi
if want node-agent; then
	mkdir -p "$WORK/node-agent/kmod"
	# The module sources exactly as the agent digests them: no build outputs, no fuzz harness.
	(cd "$ROOT/kmod" && find . -type f \
		! -path './fuzz/*' ! -name '*.o' ! -name '*.ko' ! -name '*.mod' ! -name '*.mod.c' \
		! -name '.*.cmd' ! -name 'modules.order' ! -name 'Module.symvers' ! -name '*.a' -print0 |
		cpio -0 -pdm --quiet "$WORK/node-agent/kmod")
	[ -n "$(ls -A "$WORK/node-agent/kmod")" ] || die "kmod/ has no sources"
	strip -o "$WORK/node-agent/toa-node-agent" "$bin_dir/toa-node-agent"
	base=$(base_image)
	results+=("$(build node-agent "$WORK/node-agent" --build-arg "BASE=$base")")
fi
echo "built (size, archive):"
printf '  %s\n' "${results[@]}"
