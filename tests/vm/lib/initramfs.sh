# shellcheck shell=bash source-path=SCRIPTDIR
# Guest initramfs: busybox-static, kernel modules from the kernel's image package, our own
# files, packed as a gzip'ed newc cpio.
#
#   initramfs_new DIR                     -> fresh staging tree with busybox (and its applets)
#   initramfs_add_kmod DIR NAME           -> NAME.ko and its dependencies from $KMODDIR,
#                                            decompressed, appended (deps first) to
#                                            DIR/etc/modules.order (the /init loads that list)
#   initramfs_add_file DIR SRC DST [MODE] -> copies SRC to DIR/DST
#   initramfs_pack DIR OUT                -> OUT = gzip'ed newc cpio of DIR
#
# The caller writes DIR/init (a busybox sh script; see tests/vm/kmod.sh).

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

_initramfs_busybox() {
	local dir="$TOA_CACHE_DIR/busybox" deb
	if [ ! -x "$dir/bin/busybox" ]; then
		# Unpacked, not installed: busybox-static conflicts with the busybox package.
		deb=$(toa_fetch_debs "$TOA_CACHE_DIR/debs/bookworm" apt-get busybox-static)
		rm -rf "$dir" && mkdir -p "$dir"
		dpkg -x "$deb" "$dir"
		[ -x "$dir/bin/busybox" ] || toa_die "busybox-static package has no bin/busybox"
	fi
	printf '%s\n' "$dir/bin/busybox"
}

initramfs_new() {
	local dir=$1 bb
	need_apt cpio gzip kmod xz-utils zstd
	bb=$(_initramfs_busybox)
	rm -rf "$dir"
	mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules}
	cp "$bb" "$dir/bin/busybox"
	: >"$dir/etc/modules.order"
}

# _initramfs_kmod_file NAME: path of NAME's module file in $KMODDIR (any compression).
_initramfs_kmod_file() {
	local f
	f=$(find "$KMODDIR/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" | head -n1)
	[ -n "$f" ] || toa_die "module $1 not found under $KMODDIR/kernel (built in, or not in this kernel?)"
	printf '%s\n' "$f"
}

initramfs_add_kmod() {
	local dir=$1 name=$2 f dep
	[ -n "${KMODDIR:-}" ] || toa_die "initramfs_add_kmod: run kernel_prepare first (KMODDIR unset)"
	grep -qx "$name" "$dir/etc/modules.order" && return 0
	# Built into this kernel: nothing to load.
	if [ -r "$KMODDIR/modules.builtin" ] &&
		grep -Eq "(^|/)$(printf '%s' "$name" | sed 's/[_-]/[_-]/g')\.ko$" "$KMODDIR/modules.builtin"; then
		return 0
	fi
	f=$(_initramfs_kmod_file "$name")
	for dep in $(modinfo -F depends "$f" | tr ',' ' '); do
		initramfs_add_kmod "$dir" "$dep"
	done
	# busybox insmod cannot decompress: store plain .ko files.
	case $f in
	*.xz) xz -dc "$f" >"$dir/lib/modules/$name.ko" ;;
	*.zst) zstd -qdc "$f" >"$dir/lib/modules/$name.ko" ;;
	*.gz) gzip -dc "$f" >"$dir/lib/modules/$name.ko" ;;
	*) cp "$f" "$dir/lib/modules/$name.ko" ;;
	esac
	echo "$name" >>"$dir/etc/modules.order"
}

initramfs_add_file() {
	local dir=$1 src=$2 dst=$3 mode=${4:-}
	[ -r "$src" ] || toa_die "initramfs_add_file: $src not readable"
	mkdir -p "$(dirname "$dir/$dst")"
	cp "$src" "$dir/$dst"
	[ -z "$mode" ] || chmod "$mode" "$dir/$dst"
}

initramfs_pack() {
	local dir=$1 out=$2
	[ -x "$dir/init" ] || toa_die "initramfs_pack: $dir/init missing or not executable"
	(cd "$dir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$out.tmp"
	mv "$out.tmp" "$out"
}
