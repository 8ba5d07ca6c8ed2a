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
#   toa_cpio_pack DIR OUT [gzip]          -> OUT = newc cpio of DIR (owner root), written under
#                                            a temporary name, checked with cpio -t, renamed
#   toa_cpio_ok FILE                      -> true when FILE (.gz or plain) lists with cpio -t
#
# The caller writes DIR/init (a busybox sh script; see tests/vm/kmod.sh).

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# initramfs_needs: cpio packs, kmod's modinfo reads module dependencies, xz/zstd/gzip
# decompress modules.
initramfs_needs() { need_apt cpio gzip kmod xz-utils zstd; }

# The cached busybox is checked on every use (ELF, runs); a bad one is unpacked again.
_initramfs_busybox() {
	local dir="$TOA_CACHE_DIR/busybox" deb tmp
	if [ -e "$dir" ] && ! _initramfs_busybox_ok "$dir/bin/busybox"; then
		toa_cache_rebuild "$dir/bin/busybox" "is not a working busybox (truncated or partial)"
		rm -rf "$dir"
	fi
	if [ ! -e "$dir" ]; then
		# Unpacked, not installed: busybox-static conflicts with the busybox package.
		deb=$(toa_fetch_debs "$TOA_CACHE_DIR/debs/bookworm" apt-get busybox-static)
		tmp=$dir.tmp.$$
		rm -rf "$tmp" && mkdir -p "$tmp"
		dpkg -x "$deb" "$tmp" || toa_die "dpkg -x $deb failed"
		_initramfs_busybox_ok "$tmp/bin/busybox" || toa_die "busybox-static package has no working bin/busybox"
		mv -T "$tmp" "$dir" || toa_die "cannot rename $tmp to $dir"
	fi
	printf '%s\n' "$dir/bin/busybox"
}

_initramfs_busybox_ok() { toa_elf_file "$1" && [ -x "$1" ] && "$1" true >/dev/null 2>&1; }

initramfs_new() {
	local dir=$1 bb
	initramfs_needs
	bb=$(_initramfs_busybox)
	rm -rf "$dir"
	mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules}
	cp "$bb" "$dir/bin/busybox" || toa_die "cannot copy busybox into $dir"
	: >"$dir/etc/modules.order"
}

# _initramfs_kmod_file NAME: path of NAME's module file in $KMODDIR (any compression).
_initramfs_kmod_file() {
	local f
	f=$(find "$KMODDIR/kernel" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz")
	f=${f%%$'\n'*}
	[ -n "$f" ] || toa_die "module $1 not found under $KMODDIR/kernel (built in, or not in this kernel?)"
	printf '%s\n' "$f"
}

initramfs_add_kmod() {
	local dir=$1 name=$2 f dep deps
	[ -n "${KMODDIR:-}" ] || toa_die "initramfs_add_kmod: run kernel_prepare first (KMODDIR unset)"
	grep -qx "$name" "$dir/etc/modules.order" && return 0
	# Built into this kernel: nothing to load.
	if [ -r "$KMODDIR/modules.builtin" ] &&
		grep -Eq "(^|/)$(printf '%s' "$name" | sed 's/[_-]/[_-]/g')\.ko$" "$KMODDIR/modules.builtin"; then
		return 0
	fi
	f=$(_initramfs_kmod_file "$name")
	deps=$(modinfo -F depends "$f") || toa_die "modinfo -F depends $f failed"
	for dep in ${deps//,/ }; do
		initramfs_add_kmod "$dir" "$dep"
	done
	# busybox insmod cannot decompress: store plain .ko files.
	case $f in
	*.xz) xz -dc "$f" >"$dir/lib/modules/$name.ko" ;;
	*.zst) zstd -qdc "$f" >"$dir/lib/modules/$name.ko" ;;
	*.gz) gzip -dc "$f" >"$dir/lib/modules/$name.ko" ;;
	*) cp "$f" "$dir/lib/modules/$name.ko" ;;
	esac || toa_die "cannot decompress $f"
	toa_elf_file "$dir/lib/modules/$name.ko" || toa_die "$dir/lib/modules/$name.ko (from $f) is not an ELF module"
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
	toa_cpio_pack "$dir" "$out" gzip
}

# toa_cpio_pack DIR OUT [gzip]: newc archive of DIR (owner root, sorted names), gzip'ed when
# asked, written to OUT.tmp.PID, checked with cpio -t and renamed to OUT.
toa_cpio_pack() {
	local dir=$1 out=$2 z=${3:-} tmp=$2.tmp.$$ list
	initramfs_needs
	list=$(mktemp "$tmp.list.XXXXXX")
	(cd "$dir" && find . -print0) >"$list" || toa_die "cannot list $dir"
	if [ -n "$z" ]; then
		LC_ALL=C sort -z "$list" | (cd "$dir" && cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$tmp" ||
			toa_die "packing $dir into $tmp failed"
	else
		LC_ALL=C sort -z "$list" | (cd "$dir" && cpio --null -o -H newc --owner=0:0 --quiet) >"$tmp" ||
			toa_die "packing $dir into $tmp failed"
	fi
	rm -f "$list"
	toa_cpio_ok "$tmp" || toa_die "the archive $tmp of $dir does not list with cpio -t"
	mv "$tmp" "$out" || toa_die "cannot rename $tmp to $out"
}

# toa_cpio_ok FILE: FILE is a non-empty cpio archive (gzip'ed when named *.gz) that lists to
# the end without error (a truncated one fails: "premature end of archive").
toa_cpio_ok() {
	local f=$1 n
	[ -s "$f" ] || return 1
	case $f in
	*.gz | *.gz.tmp.*) n=$(gzip -dc "$f" | cpio -it --quiet 2>/dev/null | wc -l) || return 1 ;;
	*) n=$(cpio -it --quiet <"$f" 2>/dev/null | wc -l) || return 1 ;;
	esac
	[ "$n" -gt 0 ]
}
