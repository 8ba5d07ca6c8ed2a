#!/usr/bin/env bash
# Builds the toa-operator and toa-node-agent images into OCI archives, without a registry or a
# Docker daemon (not offline: it needs root, crates.io and Debian's archive).
#
#   images/build.sh [--out DIR] [--version V] [--skip-cargo] [--only operator|node-agent]
#
# Produces (default DIR = target/images):
#   DIR/toa-operator-V.oci.tar     FROM scratch: the static musl binary, user 65532
#   DIR/toa-node-agent-V.oci.tar   the root of images/node-agent-root.sh (Debian trixie minbase +
#                                  images/node-agent.packages: make, gcc-12/13/14, libelf-dev,
#                                  dwarves, kmod, bc, perl); the static agent; kmod sources at
#                                  /usr/share/toa-node-agent/kmod
# Both are tagged localhost/NAME:V inside the archive. Load them with e.g.
#   kind load image-archive DIR/toa-node-agent-V.oci.tar
#   skopeo copy oci-archive:DIR/toa-operator-V.oci.tar docker://REGISTRY/toa-operator:V
#
# How (no registry, no Docker daemon): cargo builds static musl binaries; the agent's base is the
# root of images/node-agent-root.sh (debootstrap reaches Debian's archive, the only network it
# needs), imported into a private buildah store (vfs driver, --isolation chroot), on which buildah
# runs images/node-agent.Containerfile (the agent's files and metadata). The guest suites run the
# agent from that same root. The operator image is FROM scratch. The root and the buildah store
# are cached in ${TOA_CACHE_DIR}/images.
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

# --- the agent's base: the image root of images/node-agent-root.sh imported into buildah --------
# The same root the guest suites run the agent from (tests/vm/agent.sh): debootstrap minbase
# trixie with images/node-agent.packages, keyed by that list.
base_image() {
	local rootfs ref ctr mnt
	rootfs=$("$ROOT/images/node-agent-root.sh" base) || die "images/node-agent-root.sh base failed"
	ref=localhost/toa-node-agent-root:${rootfs##*/}
	if buildah "${STORE[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
		echo "$ref"
		return
	fi
	log "importing $rootfs as $ref"
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
	mkdir -p "$WORK/node-agent"
	strip -o "$WORK/toa-node-agent" "$bin_dir/toa-node-agent"
	# The agent and the module sources, staged as the guest suites stage them.
	"$ROOT/images/node-agent-root.sh" stage "$WORK/node-agent" "$WORK/toa-node-agent" ||
		die "staging the agent's files failed"
	base=$(base_image)
	results+=("$(build node-agent "$WORK/node-agent" --build-arg "BASE=$base")")
fi
echo "built (size, archive):"
printf '  %s\n' "${results[@]}"
