# shellcheck shell=bash source-path=SCRIPTDIR
# SPDX-License-Identifier: GPL-2.0
#
# Debian suites other than this machine's own, for kernel coverage (issue 6).
#
# Each Debian kernel must be built with its own distribution's compiler (5.10 with gcc-10,
# 7.2 with gcc-16, ...). This file gives the test suites:
#   - a private apt configuration per suite, so this machine's own apt stays untouched;
#   - kernel packages of a suite resolved through apt-cache (never hardcoded ABI numbers);
#   - cached `debootstrap --variant=minbase` roots of a suite with its compiler;
#   - module builds inside such a root (chroot), checked against the kernel's
#     CONFIG_CC_VERSION_TEXT.
#
# Functions (results on stdout, progress and timings on stderr, non-zero on error):
#   suite_apt SUITE apt-get|apt-cache ARGS...   (suite_apt_opts SUITE: just the -o options)
#   suite_fetch SUITE PKG...                    -> paths of the downloaded .debs
#   suite_kernel SUITE META DIR                 -> KVER (image+headers+common+kbuild unpacked in DIR)
#   suite_kernel_header_debs SUITE KVER         -> the 3 header .debs (for a guest's /usr/src)
#   suite_root SUITE [EXTRA-PKGS...]            -> path of a cached minbase root
#   suite_kernel_root SUITE KDIR [EXTRA...]     -> suite_root with the kernel's gcc-N
#   suite_build_module ROOT KDIR MODSRC OUTDIR  -> builds MODSRC with W=1 inside ROOT
#
# The archive addresses come from this machine's apt sources at runtime (override with
# TOA_DEBIAN_MIRROR / TOA_DEBIAN_SECURITY_MIRROR), so no host is named here.

TOA_CACHE_DIR=${TOA_CACHE_DIR:-$HOME/.cache/toa-operator}
export TOA_CACHE_DIR
# need_apt, toa_deb_ok
# shellcheck source=../../lib/deps.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../lib/deps.sh"

# Suites we know how to assemble (suite -> archive suites it lists).
TOA_SUITES="bullseye bookworm trixie sid"
# apt lists older than this are refreshed before use (sid and the security suites move daily).
TOA_SUITE_LISTS_MAX_AGE=${TOA_SUITE_LISTS_MAX_AGE:-43200}

# suites_needs: debootstrap builds the roots; flock/unshare/chroot are Essential (util-linux,
# coreutils).
suites_needs() { need_apt debootstrap; }

_suite_log() { echo "suites: $*" >&2; }
_suite_err() { echo "suites: error: $*" >&2; }
_suite_now() { date +%s.%N; }
_suite_since() { awk -v a="$1" -v b="$(_suite_now)" 'BEGIN { printf "%.1fs", b - a }'; }

_suite_check_name() {
	case " $TOA_SUITES " in
	*" $1 "*) return 0 ;;
	esac
	_suite_err "unknown suite '$1' (known: $TOA_SUITES)"
	return 1
}

# Prints "MAIN_URI SECURITY_URI KEYRING" read from this machine's apt sources (deb822
# *.sources and one-line *.list). Only stanzas that list Debian suites count.
_suite_host_archives() {
	local main=${TOA_DEBIAN_MIRROR:-} sec=${TOA_DEBIAN_SECURITY_MIRROR:-} keyring=
	local files=() f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] && files+=("$f")
	done
	local parsed
	parsed=$(awk '
		function flush() {
			if (uris != "" && suites != "") print uris "|" suites "|" signed
			uris = ""; suites = ""; signed = ""
		}
		FNR == 1 { flush() }
		FILENAME ~ /\.sources$/ {
			if ($0 ~ /^[ \t]*$/) { flush(); next }
			if ($0 ~ /^[ \t]*#/) next
			if (tolower($1) == "uris:") { uris = $2 }
			else if (tolower($1) == "suites:") { suites = ""; for (i = 2; i <= NF; i++) suites = suites " " $i }
			else if (tolower($1) == "signed-by:") { signed = $2 }
			next
		}
		/^[ \t]*deb[ \t]/ {
			signed = ""; n = 2
			if ($2 ~ /^\[/) {
				for (n = 2; n <= NF; n++) {
					if ($n ~ /signed-by=/) { s = $n; sub(/.*signed-by=/, "", s); sub(/\].*/, "", s); signed = s }
					if ($n ~ /\]$/) { n++; break }
				}
			}
			print $n "|" " " $(n + 1) "|" signed
		}
		END { flush() }' "${files[@]}" 2>/dev/null)
	local uris suites signed s
	while IFS='|' read -r uris suites signed; do
		[ -n "$uris" ] || continue
		# Signed-By may also hold an inline key block: then use the archive keyring.
		case "$signed" in
		/*) ;;
		*) signed= ;;
		esac
		for s in $suites; do
			case "$s" in
			*-security | */updates)
				[ -n "$sec" ] || sec=$uris
				;;
			buster* | bullseye* | bookworm* | trixie* | forky* | duke* | sid | stable* | testing* | unstable* | oldstable*)
				[ -n "$main" ] || main=$uris
				;;
			*) continue ;;
			esac
			[ -n "$keyring" ] || keyring=$signed
		done
	done <<<"$parsed"
	if [ -z "$main" ] || [ -z "$sec" ]; then
		_suite_err "cannot find the Debian archive (and its security archive) in this machine's apt sources; set TOA_DEBIAN_MIRROR and TOA_DEBIAN_SECURITY_MIRROR"
		return 1
	fi
	[ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	if [ ! -r "$keyring" ]; then
		_suite_err "archive keyring $keyring is not readable: install debian-archive-keyring"
		return 1
	fi
	echo "${main%/} ${sec%/} $keyring"
}

_suite_dir() { echo "$TOA_CACHE_DIR/suites/$1"; }

# Writes the suite's private sources.list (once; rewritten when the host's archive changes).
_suite_setup() {
	local suite=$1 d main sec keyring want
	_suite_check_name "$suite" || return 1
	d=$(_suite_dir "$suite")
	read -r main sec keyring < <(_suite_host_archives) || return 1
	[ -n "$main" ] || return 1
	case "$suite" in
	bullseye) want="deb [signed-by=$keyring] $main bullseye main
deb [signed-by=$keyring] $sec bullseye-security main" ;;
	bookworm) want="deb [signed-by=$keyring] $main bookworm main
deb [signed-by=$keyring] $main bookworm-updates main
deb [signed-by=$keyring] $sec bookworm-security main" ;;
	trixie) want="deb [signed-by=$keyring] $main trixie main
deb [signed-by=$keyring] $main trixie-updates main
deb [signed-by=$keyring] $sec trixie-security main" ;;
	sid) want="deb [signed-by=$keyring] $main sid main" ;;
	esac
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/state" "$d/parts.d" "$d/debs" || return 1
	[ -f "$d/state/status" ] || : >"$d/state/status"
	if [ ! -f "$d/sources.list" ] || [ "$(cat "$d/sources.list")" != "$want" ]; then
		printf '%s\n' "$want" >"$d/sources.list.$$" && mv "$d/sources.list.$$" "$d/sources.list"
		rm -f "$d/lists.stamp"
	fi
}

# The private apt options for SUITE, one per line (also useful for callers of apt-get directly).
suite_apt_opts() {
	local d
	d=$(_suite_dir "$1")
	printf '%s\n' \
		-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=$d/parts.d" \
		-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$d/parts.d" \
		-o "Dir::State=$d/state" -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/state/status" \
		-o "Dir::Cache=$d/cache" -o "Dir::Cache::archives=$d/cache/archives" \
		-o "APT::Architecture=$(dpkg --print-architecture)" -o "APT::Architectures=$(dpkg --print-architecture)" \
		-o "APT::Sandbox::User=root" -o "Acquire::Languages=none" -o "Acquire::PDiffs=false" \
		-o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false" \
		-o "APT::Get::List-Cleanup=true"
}

_suite_run_apt() {
	local suite=$1 tool=$2 d
	shift 2
	d=$(_suite_dir "$suite")
	local opts=()
	mapfile -t opts < <(suite_apt_opts "$suite")
	# One apt at a time per suite: parallel suites share these private lists.
	flock -w 900 "$d/.lock" "$tool" "${opts[@]}" "$@"
}

# Refreshes the suite's lists when missing or older than TOA_SUITE_LISTS_MAX_AGE (or when
# FORCE=1 is the second argument, e.g. after a 404 for a package the archive dropped).
_suite_update() {
	local suite=$1 force=${2:-0} d stamp age t0
	d=$(_suite_dir "$suite")
	stamp="$d/lists.stamp"
	if [ "$force" != 1 ] && [ -f "$stamp" ]; then
		age=$(($(date +%s) - $(stat -c %Y "$stamp")))
		[ "$age" -lt "$TOA_SUITE_LISTS_MAX_AGE" ] && return 0
	fi
	t0=$(_suite_now)
	if ! _suite_run_apt "$suite" apt-get -qq update >"$d/update.log" 2>&1 ||
		grep -qE '^(W|E): ' "$d/update.log"; then
		_suite_err "apt-get update for suite $suite failed (log: $d/update.log):"
		sed 's/^/  /' "$d/update.log" >&2
		return 1
	fi
	touch "$stamp"
	_suite_log "apt lists of $suite updated in $(_suite_since "$t0")"
}

# suite_apt SUITE apt-get|apt-cache ARGS...: runs that tool against SUITE's private
# configuration (lists refreshed on demand). This machine's /etc/apt and /var/lib/apt are
# neither read for sources nor written.
suite_apt() {
	if [ $# -lt 2 ]; then
		_suite_err "usage: suite_apt SUITE apt-get|apt-cache ARGS..."
		return 2
	fi
	local suite=$1 tool=$2
	shift 2
	case "$tool" in
	apt-get | apt-cache) ;;
	*)
		_suite_err "suite_apt: tool must be apt-get or apt-cache, not '$tool'"
		return 2
		;;
	esac
	_suite_setup "$suite" || return 1
	_suite_update "$suite" || return 1
	_suite_run_apt "$suite" "$tool" "$@"
}

# suite_fetch SUITE PKG...: downloads the packages' .debs (current candidate versions) into
# the suite's cache, skipping those already there, and prints their paths in argument order.
suite_fetch() {
	local suite=$1 d p f attempt out
	shift
	_suite_setup "$suite" || return 1
	_suite_update "$suite" || return 1
	d=$(_suite_dir "$suite")/debs
	# One apt run for all packages (each run loads the whole package cache).
	local -A file=() size=() sum=()
	local missing=()
	for attempt in 1 2; do
		if ! out=$(_suite_run_apt "$suite" apt-get -qq --print-uris download "$@" 2>&1); then
			_suite_err "packages '$*' are not all in suite $suite: $out"
			return 1
		fi
		for p in "$@"; do
			# Lines: 'URI' NAME_VERSION_ARCH.deb SIZE HASH
			f=$(awk -v p="$p" 'index($2, p "_") == 1 { print $2, $3, $4; exit }' <<<"$out")
			if [ -z "$f" ]; then
				_suite_err "apt-get --print-uris download $p printed no file: $out"
				return 1
			fi
			read -r "file[$p]" "size[$p]" "sum[$p]" <<<"$f"
		done
		missing=()
		for p in "$@"; do
			f=$d/${file[$p]}
			[ -e "$f" ] || {
				missing+=("$p")
				continue
			}
			if ! toa_deb_ok "$f" "${size[$p]}" "${sum[$p]}"; then
				_suite_log "cache: $f differs from the archive's size/SHA256 (truncated or damaged): downloading it again"
				rm -f "$f"
				missing+=("$p")
			fi
		done
		[ "${#missing[@]}" -eq 0 ] && break
		# Downloaded into a temporary directory, moved once each file matches the index.
		local tmp ok=1
		tmp=$(mktemp -d "$d/.download.XXXXXX") || return 1
		if (cd "$tmp" && _suite_run_apt "$suite" apt-get -qq download "${missing[@]}" >/dev/null 2>"$d/.download.$$.err"); then
			for p in "${missing[@]}"; do
				if toa_deb_ok "$tmp/${file[$p]}" "${size[$p]}" "${sum[$p]}"; then
					mv "$tmp/${file[$p]}" "$d/${file[$p]}" || ok=
				else
					_suite_err "apt-get download $p gave no ${file[$p]} of ${size[$p]} bytes with ${sum[$p]}"
					ok=
				fi
			done
			rm -rf "$tmp"
			[ -n "$ok" ] || return 1
			rm -f "$d/.download.$$.err"
			break
		fi
		rm -rf "$tmp"
		if [ "$attempt" = 1 ]; then
			# The archive may have replaced the versions our lists know about.
			_suite_log "download of ${missing[*]} failed, refreshing the $suite lists and retrying"
			_suite_update "$suite" 1 || return 1
			continue
		fi
		_suite_err "cannot download ${missing[*]} from $suite: $(cat "$d/.download.$$.err")"
		rm -f "$d/.download.$$.err"
		return 1
	done
	for p in "$@"; do
		printf '%s\n' "$d/${file[$p]}"
	done
}

# Prints the dependency names of PKG in SUITE that match the extended regex RE.
_suite_depends_matching() {
	suite_apt "$1" apt-cache depends --no-recommends --no-suggests "$2" 2>/dev/null |
		awk '$1 == "Depends:" || $1 == "|Depends:" { print $2 }' | grep -E "$3" | sort -u
}

# suite_kernel SUITE META DIR: resolves the kernel that META (e.g. linux-image-amd64, or
# linux-image-6.12-amd64) points to in SUITE, downloads its image, headers, -common headers
# and kbuild packages (and, since 7.x, the split linux-binary/-modules/-base packages),
# unpacks them into DIR (once) and prints the kernel release. Layout for every suite:
# DIR/boot/{vmlinuz,config,System.map}-KVER, DIR/lib/modules/KVER,
# DIR/usr/src/linux-headers-KVER (the KDIR).
# The arch headers' Makefile includes the -common one by absolute path: it is rewritten to
# point into DIR, so DIR/usr/src/linux-headers-KVER is a usable KDIR.
suite_kernel() {
	if [ $# -ne 3 ]; then
		_suite_err "usage: suite_kernel SUITE META DIR"
		return 2
	fi
	local suite=$1 meta=$2 dir=$3 t0 image kver
	t0=$(_suite_now)
	# The real path goes into the headers' Makefile: builds bind-mount the real tree into a
	# root, where a symlinked cache path would not resolve.
	mkdir -p "$dir" && dir=$(realpath -e "$dir") || return 1
	image=$(_suite_depends_matching "$suite" "$meta" '^linux-image-[0-9]') || true
	if [ -z "$image" ] || [ "$(echo "$image" | wc -l)" -ne 1 ]; then
		_suite_err "cannot resolve $meta in $suite to one linux-image package (got: ${image:-nothing})"
		return 1
	fi
	kver=${image#linux-image-}
	kver=${kver%-unsigned}
	# Parallel suites (kmod.sh, agent.sh) may prepare the same kernel: one unpacks.
	(
		flock -w 900 9 || {
			_suite_err "timed out waiting for another unpack of $kver in $dir"
			exit 1
		}
		_suite_kernel_ready "$dir" "$kver" && exit 0
		_suite_kernel_unpack "$suite" "$meta" "$dir" "$image" "$kver" "$t0"
	) 9>"$dir/.toa-kernel.lock" || return 1
	echo "$kver"
}

_suite_kernel_ready() {
	[ -f "$1/.toa-kernel-$2" ] && grep -q "^include $1/usr/src/" "$1/usr/src/linux-headers-$2/Makefile" 2>/dev/null
}

# suite_kernel_header_debs SUITE KVER: downloads (cached) and prints the paths of
# linux-headers-KVER, its -common headers and its linux-kbuild package: what a guest needs
# to build modules for KVER (unpacked as is, the Makefile's /usr/src include is right there).
suite_kernel_header_debs() {
	if [ $# -ne 2 ]; then
		_suite_err "usage: suite_kernel_header_debs SUITE KVER"
		return 2
	fi
	local pkgs
	pkgs=$(_suite_header_pkgs "$1" "$2") || return 1
	# shellcheck disable=SC2086
	suite_fetch "$1" $pkgs
}

# Prints linux-headers-KVER and the -common and linux-kbuild packages it depends on.
_suite_header_pkgs() {
	local suite=$1 kver=$2 headers common kbuild
	headers=linux-headers-$kver
	common=$(_suite_depends_matching "$suite" "$headers" '^linux-headers-.*-common$') || true
	kbuild=$(_suite_depends_matching "$suite" "$headers" '^linux-kbuild-') || true
	if [ -z "$common" ] || [ -z "$kbuild" ] || [ "$(wc -l <<<"$common")" -ne 1 ] || [ "$(wc -l <<<"$kbuild")" -ne 1 ]; then
		_suite_err "cannot resolve the -common headers and linux-kbuild packages of $headers in $suite (got '${common}' '${kbuild}')"
		return 1
	fi
	printf '%s\n' "$headers" "$common" "$kbuild"
}

_suite_kernel_unpack() {
	local suite=$1 meta=$2 dir=$3 image=$4 kver=$5 t0=$6 headers common kbuild deb p hp
	hp=$(_suite_header_pkgs "$suite" "$kver") || return 1
	{ read -r headers && read -r common && read -r kbuild; } <<<"$hp"
	# Since 7.x the image package is split: linux-binary-KVER (vmlinuz), linux-modules-KVER,
	# linux-base-KVER (System.map, config). Take every dependency named after this KVER.
	local parts=() pkgs
	mapfile -t parts < <(
		for p in "$image" "$headers"; do
			suite_apt "$suite" apt-cache depends --no-recommends --no-suggests "$p" 2>/dev/null |
				awk -v k="-$kver" '($1 == "Depends:" || $1 == "|Depends:") &&
					substr($2, length($2) - length(k) + 1) == k { print $2 }'
		done | sort -u
	)
	mapfile -t pkgs < <(printf '%s\n' "$image" "$headers" "$common" "$kbuild" "${parts[@]}" | awk 'NF && !seen[$0]++')
	local debs=()
	mapfile -t debs < <(suite_fetch "$suite" "${pkgs[@]}")
	if [ "${#debs[@]}" -ne "${#pkgs[@]}" ]; then
		_suite_err "downloading the $kver packages from $suite failed"
		return 1
	fi
	mkdir -p "$dir" || return 1
	for deb in "${debs[@]}"; do
		dpkg-deb -x "$deb" "$dir" || {
			_suite_err "cannot unpack $deb into $dir"
			return 1
		}
	done
	local kdir=$dir/usr/src/linux-headers-$kver
	if [ ! -f "$kdir/Makefile" ] || [ ! -f "$kdir/.config" ]; then
		_suite_err "$kdir has no Makefile/.config after unpacking $headers"
		return 1
	fi
	# "include /usr/src/linux-headers-X-common/Makefile" -> the same file inside DIR; since
	# 7.x also "KBUILD_OUTPUT=/usr/src/linux-headers-X".
	sed -i -E -e "s|^include (/usr/src/linux-headers-[^ ]*)|include $dir\\1|" \
		-e "s|^KBUILD_OUTPUT[ ]*=[ ]*(/usr/src/linux-headers-[^ ]*)|KBUILD_OUTPUT=$dir\\1|" "$kdir/Makefile"
	if ! grep -q "^include $dir/usr/src/" "$kdir/Makefile"; then
		_suite_err "unexpected $kdir/Makefile (no absolute include of the -common headers): $(head -3 "$kdir/Makefile")"
		return 1
	fi
	# One layout for every suite: 7.x ships vmlinuz/config/System.map in
	# usr/lib/modules/KVER/ (merged /usr); older kernels in boot/ and lib/modules/.
	local m=$dir/usr/lib/modules/$kver f
	mkdir -p "$dir/boot"
	for f in vmlinuz config System.map; do
		if [ ! -e "$dir/boot/$f-$kver" ] && [ -e "$m/$f" ]; then
			ln -s "../usr/lib/modules/$kver/$f" "$dir/boot/$f-$kver"
		fi
	done
	if [ ! -e "$dir/lib/modules/$kver" ] && [ -d "$m" ]; then
		mkdir -p "$dir/lib/modules" && ln -s "../../usr/lib/modules/$kver" "$dir/lib/modules/$kver"
	fi
	for f in vmlinuz config System.map; do
		if [ ! -e "$dir/boot/$f-$kver" ]; then
			_suite_err "the $kver packages have no $f (looked in $dir/boot and $m)"
			return 1
		fi
	done
	printf '%s\n' "$suite" "$meta" "${pkgs[@]}" >"$dir/.toa-kernel-$kver"
	_suite_log "kernel $kver ($suite $meta) ready in $dir in $(_suite_since "$t0")"
}

# The suite's package that provides pahole: "dwarves" up to bookworm, "pahole" later
# (dwarves became a transitional package).
_suite_pahole_pkg() {
	if suite_apt "$1" apt-cache show --no-all-versions pahole >/dev/null 2>&1; then
		echo pahole
	else
		echo dwarves
	fi
}

# suite_root SUITE [EXTRA-PKGS...]: prints the path of a `debootstrap --variant=minbase`
# root of SUITE with a compiler toolchain for out-of-tree modules (make, libc6-dev,
# libelf-dev, kmod, bc, perl, pahole/dwarves, gcc), plus EXTRA-PKGS (words
# may also be space separated inside one argument). Built once per (suite, package list),
# under $TOA_CACHE_DIR/roots/; callers must not modify it (ask for extra packages instead).
# Without a gcc-N among the extras, the suite's default gcc is installed.
suite_root() {
	if [ $# -lt 1 ]; then
		_suite_err "usage: suite_root SUITE [EXTRA-PKGS...]"
		return 2
	fi
	local suite=$1 p
	shift
	_suite_check_name "$suite" || return 1
	# perl: W=1 runs scripts/kernel-doc (Pod::Usage, not in perl-base) up to 6.12.
	local base=(make libc6-dev libelf-dev kmod bc perl @pahole) extras=() gcc=gcc
	# Words are split on purpose: "jq curl" in one argument means two packages.
	# shellcheck disable=SC2048
	for p in $*; do
		case "$p" in
		gcc-[0-9]*) gcc=$p ;;
		make | libc6-dev | libelf-dev | kmod | bc | perl | pahole | dwarves | gcc) ;;
		*) extras+=("$p") ;;
		esac
	done
	base+=("$gcc")
	local list key root
	list=$(printf '%s
' "${base[@]}" | sort -u | tr '
' ' ')
	list=${list% }
	key=$(printf '%s
%s
%s
' "$suite" "$list" "$(_suite_debootstrap_version)" | sha256sum | cut -c1-12)
	root=$TOA_CACHE_DIR/roots/$suite-$key
	_suite_locked_build "$root" _suite_build_root "$suite" "$root" "$list" || return 1
	if [ "${#extras[@]}" -eq 0 ]; then
		echo "$root"
		return 0
	fi
	# Extra packages: a copy of the toolchain root plus those packages (seconds, where a
	# second debootstrap would take a minute), so build and guest roots share one base.
	local xlist xroot
	xlist=$(printf '%s
' "${extras[@]}" | sort -u | tr '
' ' ')
	xlist=${xlist% }
	xroot=$root+$(printf '%s
' "$xlist" | sha256sum | cut -c1-8)
	_suite_locked_build "$xroot" _suite_derive_root "$suite" "$root" "$xroot" "$xlist" || return 1
	echo "$xroot"
}

# _suite_locked_build ROOT FUNC ARGS...: runs FUNC unless ROOT is complete; one builder
# per ROOT at a time (a second caller waits, then reuses it).
_suite_locked_build() {
	local root=$1
	shift
	if [ -f "$root/.toa-root-ok" ]; then
		_suite_root_ok "$root" && return 0
		_suite_log "cache: root $root is damaged (a package of its list is not installed): rebuilding it"
		rm -rf "$root"
	fi
	mkdir -p "${root%/*}" || return 1
	(
		flock -w 1800 9 || {
			_suite_err "timed out waiting for another build of $root"
			exit 1
		}
		[ -f "$root/.toa-root-ok" ] && exit 0
		"$@"
	) 9>"${root%/*}/.${root##*/}.lock"
}

# _suite_root_ok ROOT: the marker, and every package its toa-root.info lists is installed.
_suite_root_ok() {
	local root=$1 line p status
	[ -f "$root/.toa-root-ok" ] || return 1
	line=$(grep -m1 '^packages=' "$root/etc/toa-root.info" 2>/dev/null) || return 1
	for p in ${line#packages=}; do
		status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' "$p" 2>/dev/null) || return 1
		[ "$status" = "install ok installed" ] || return 1
	done
}

# _suite_derive_root SUITE BASE ROOT "PKG...": ROOT = copy of BASE + PKGs. apt runs here,
# with the suite's private lists and ROOT's dpkg status, so it fetches exactly what ROOT
# lacks; dpkg installs inside the root (chroot, private mount namespace).
_suite_derive_root() {
	local suite=$1 base_root=$2 root=$3 list=$4 t0 tmp debs
	t0=$(_suite_now)
	tmp=$root.tmp.$$
	debs=$tmp/var/cache/toa-debs
	rm -rf "$tmp" "$root"
	cp -a "$base_root" "$tmp" || return 1
	rm -f "$tmp/.toa-root-ok"
	mkdir -p "$debs/partial" || return 1
	# shellcheck disable=SC2086
	if ! suite_apt "$suite" apt-get -qq -y --download-only --no-install-recommends \
		-o "Dir::State::status=$tmp/var/lib/dpkg/status" -o "Dir::Cache::archives=$debs" \
		install $list >"$root.log" 2>&1; then
		_suite_err "cannot resolve/download '$list' for the $suite root (log: $root.log):"
		tail -10 "$root.log" | sed 's/^/  /' >&2
		rm -rf "$tmp"
		return 1
	fi
	printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d" && chmod 755 "$tmp/usr/sbin/policy-rc.d"
	if ! unshare --mount --propagation private -- bash -c '
		set -e
		mount --bind /dev "$1/dev"
		mount -t proc proc "$1/proc"
		chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
			sh -c "dpkg -i /var/cache/toa-debs/*.deb || dpkg --configure -a"
	' suite-derive "$tmp" >>"$root.log" 2>&1; then
		_suite_err "installing '$list' into the $suite root failed (log: $root.log):"
		tail -10 "$root.log" | sed 's/^/  /' >&2
		rm -rf "$tmp"
		return 1
	fi
	local p absent=
	for p in $list; do
		chroot "$tmp" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			absent="$absent $p"
	done
	if [ -n "$absent" ]; then
		_suite_err "packages not installed in the $suite root:$absent (log: $root.log)"
		rm -rf "$tmp"
		return 1
	fi
	rm -rf "$debs" "$tmp/usr/sbin/policy-rc.d" "$tmp"/usr/share/locale/* "$tmp"/usr/share/doc/* \
		"$tmp"/usr/share/man/* "$tmp"/usr/share/info/*
	sed -i "s/^packages=.*/& $list/" "$tmp/etc/toa-root.info"
	touch "$tmp/.toa-root-ok"
	mv "$tmp" "$root" || return 1
	_suite_log "$suite root with $list ready at $root ($(du -sm "$root" | cut -f1) MB) in $(_suite_since "$t0")"
}

_suite_debootstrap_version() {
	dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo none
}

_suite_build_root() {
	local suite=$1 root=$2 list=$3 t0 main sec keyring p pkgs=()
	t0=$(_suite_now)
	suites_needs
	read -r main sec keyring < <(_suite_host_archives) || return 1
	[ -n "$main" ] || return 1
	for p in $list; do
		[ "$p" = @pahole ] && p=$(_suite_pahole_pkg "$suite")
		pkgs+=("$p")
	done
	local tmp=$root.tmp.$$ cache=$TOA_CACHE_DIR/debootstrap-debs/$suite inc
	inc=$(
		IFS=,
		echo "${pkgs[*]}"
	)
	rm -rf "$tmp" "$root"
	mkdir -p "$cache" || return 1
	_suite_log "building $suite root with: ${pkgs[*]} (debootstrap)"
	if ! debootstrap --variant=minbase --keyring="$keyring" --cache-dir="$cache" \
		--include="$inc" "$suite" "$tmp" "$main" >"$root.log" 2>&1; then
		_suite_err "debootstrap of $suite failed (log: $root.log):"
		tail -20 "$root.log" | sed 's/^/  /' >&2
		rm -rf "$tmp"
		return 1
	fi
	# Downloaded .debs stay in the shared cache, not in the root (which may become a guest
	# initramfs: translations, manuals and docs are 70 MB of it that nothing here reads).
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages \
		"$tmp"/usr/share/locale/* "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/*
	{
		echo "suite=$suite"
		echo "packages=${pkgs[*]}"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	} >"$tmp/etc/toa-root.info"
	touch "$tmp/.toa-root-ok"
	mv "$tmp" "$root" || return 1
	_suite_log "$suite root ready at $root ($(du -sm "$root" | cut -f1) MB) in $(_suite_since "$t0")"
}

# Prints the gcc program named by a kernel's CONFIG_CC_VERSION_TEXT (e.g. gcc-10).
_suite_kernel_cc() {
	local kdir=$1 text prog ver
	text=$(_suite_cc_text "$kdir") || return 1
	prog=${text%% *}
	# 7.x names the compiler with its triplet: x86_64-linux-gnu-gcc-16.
	prog=${prog##*-linux-gnu-}
	case "$prog" in
	gcc-[0-9]*) echo "$prog" ;;
	gcc)
		ver=$(_suite_cc_version "$text" | cut -d. -f1)
		echo "gcc-$ver"
		;;
	*)
		_suite_err "kernel in $kdir was built with '$text': only gcc-built kernels are supported"
		return 1
		;;
	esac
}

# The first X.Y.Z in a compiler banner ("gcc-10 (Debian 10.2.1-6) 10.2.1 20210110" -> 10.2.1).
_suite_cc_version() {
	echo "$1" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1
}

_suite_cc_text() {
	local text
	text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$1/.config" 2>/dev/null)
	if [ -z "$text" ]; then
		_suite_err "$1/.config has no CONFIG_CC_VERSION_TEXT: is $1 a kernel headers directory?"
		return 1
	fi
	echo "$text"
}

# suite_kernel_root SUITE KDIR [EXTRA...]: suite_root with the gcc-N that built KDIR's kernel.
suite_kernel_root() {
	if [ $# -lt 2 ]; then
		_suite_err "usage: suite_kernel_root SUITE KDIR [EXTRA-PKGS...]"
		return 2
	fi
	local suite=$1 kdir=$2 cc
	shift 2
	cc=$(_suite_kernel_cc "$kdir") || return 1
	suite_root "$suite" "$cc" "$@"
}

# suite_build_module ROOT KDIR MODSRC OUTDIR: compiles the out-of-tree module in MODSRC
# against the headers in KDIR with the compiler of ROOT (chroot), `make W=1`, and copies
# the resulting *.ko and build.log into OUTDIR. Fails when ROOT's gcc is not the major
# version named by KDIR's CONFIG_CC_VERSION_TEXT, and on compiler warnings from MODSRC's
# files (TOA_ALLOW_WARNINGS=1 only reports them). TOA_MODULE_MAKE_ARGS adds make arguments
# (e.g. DEBUG=1).
suite_build_module() {
	if [ $# -ne 4 ]; then
		_suite_err "usage: suite_build_module ROOT KDIR MODSRC OUTDIR"
		return 2
	fi
	local root kdir modsrc outdir t0
	if ! root=$(realpath -e "$1") || ! kdir=$(realpath -e "$2") || ! modsrc=$(realpath -e "$3"); then
		_suite_err "suite_build_module: ROOT, KDIR and MODSRC must exist ($1 $2 $3)"
		return 1
	fi
	outdir=$4
	t0=$(_suite_now)
	if [ ! -f "$root/.toa-root-ok" ]; then
		_suite_err "$root is not a root made by suite_root"
		return 1
	fi
	local text cc want have
	text=$(_suite_cc_text "$kdir") || return 1
	cc=$(_suite_kernel_cc "$kdir") || return 1
	have=$(chroot "$root" "$cc" --version 2>/dev/null | head -1)
	if [ -z "$have" ]; then
		_suite_err "the kernel was built with '$text' but root $root has no $cc: use suite_kernel_root (or suite_root SUITE $cc)"
		return 1
	fi
	# Same banner apart from the program name (gcc-16 vs x86_64-linux-gnu-gcc-16): the same
	# compiler. Same major version: same flags and ABI, as Debian's own module builds
	# (linux-compiler-gcc-N) assume; reported. Another major version: an error.
	want=$(_suite_cc_version "$text")
	local have_ver
	have_ver=$(_suite_cc_version "$have")
	if [ -z "$want" ] || [ "${want%%.*}" != "${have_ver%%.*}" ]; then
		_suite_err "compiler mismatch: kernel built with '$text', root has '$have'"
		return 1
	fi
	if [ "${text#* }" != "${have#* }" ]; then
		_suite_log "note: kernel built with '$text', root has '$have' (same major version)"
	fi
	# The headers' tree (usr/src + usr/lib/linux-kbuild-*, linked relatively) is bound at
	# its own path inside the root: the Makefile's absolute include keeps working.
	local top
	top=$(realpath -e "$kdir/../../..") || return 1
	mkdir -p "$outdir" && outdir=$(realpath -e "$outdir") || return 1
	local scratch
	scratch=$(mktemp -d "$TOA_CACHE_DIR/modbuild.XXXXXX") || return 1
	cp -a "$modsrc/." "$scratch/" || return 1
	# Build outputs copied along with the sources would be reused by make: start clean.
	find "$scratch" \( -name '*.o' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \
		-o -name '.*.cmd' -o -name 'modules.order' -o -name 'Module.symvers' \) -delete
	local log=$outdir/build.log rc=0
	# A private mount namespace: the binds vanish with the process, even if it is killed.
	# shellcheck disable=SC2086
	unshare --mount --propagation private -- bash -c '
		set -e
		root=$1 top=$2 scratch=$3 kdir=$4
		shift 4
		mkdir -p "$root$top" "$root$scratch"
		mount --bind "$top" "$root$top"
		mount --bind "$scratch" "$root$scratch"
		mount --bind /dev "$root/dev"
		mount -t proc proc "$root/proc"
		exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			make -C "$kdir" M="$scratch" W=1 "$@" modules
	' suite-build "$root" "$top" "$scratch" "$kdir" ${TOA_MODULE_MAKE_ARGS:-} >"$log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		_suite_err "module build failed in $root against $kdir (rc $rc, log $log):"
		tail -30 "$log" | sed 's/^/  /' >&2
		rm -rf "$scratch"
		return 1
	fi
	local kos=()
	mapfile -t kos < <(find "$scratch" -maxdepth 1 -name '*.ko')
	if [ "${#kos[@]}" -eq 0 ]; then
		_suite_err "make succeeded but produced no .ko in $modsrc (log $log)"
		rm -rf "$scratch"
		return 1
	fi
	cp "${kos[@]}" "$outdir/" || return 1
	# Warnings that point into our sources (the scratch copy), not into the kernel's headers.
	# Kbuild prints them as $scratch/FILE (up to 6.12) or FILE (6.13+ builds from M=);
	# kernel-doc (W=1 up to 6.12) prints FILE:LINE: warning: without a column.
	local warns
	warns=$(
		cd "$scratch" && find . -type f -printf '%P\n' >"$scratch.files"
		awk -v s="$scratch/" 'NR == FNR { ours[$0] = 1; next }
			/: warning:/ {
				f = $0; sub(/:[0-9]+(:[0-9]+)?: warning:.*/, "", f)
				if (index(f, s) == 1) f = substr(f, length(s) + 1)
				sub(/^\.\//, "", f)
				if (f in ours) { l = $0; if (index(l, s) == 1) l = substr(l, length(s) + 1); print l }
			}
			/^WARNING: modpost:/ { print }' "$scratch.files" "$log"
	)
	rm -rf "$scratch" "$scratch.files"
	if [ -n "$warns" ]; then
		if [ "${TOA_ALLOW_WARNINGS:-0}" = 1 ]; then
			_suite_log "W=1 warnings from our sources (allowed):"
			echo "$warns" | sed 's/^/  /' >&2
		else
			_suite_err "W=1 warnings from our sources against $kdir:"
			echo "$warns" | sed 's/^/  /' >&2
			return 1
		fi
	fi
	_suite_log "built $(basename -a "${kos[@]}" | tr '\n' ' ')against $(basename "$kdir") with '$have' in $(_suite_since "$t0")"
}
