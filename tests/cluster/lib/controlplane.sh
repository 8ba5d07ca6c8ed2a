# shellcheck shell=bash
# A real Kubernetes control plane for the cluster suite: kube-apiserver, kube-controller-manager,
# kubectl and etcd built from Go modules at pinned versions, started on 127.0.0.1 only with TLS.
#
# ---------------------------------------------------------------------------------------------
# INTERFACE (stable; tests/cluster/lib/nodes.sh builds against it)
#
# Source tests/lib/deps.sh, then this file. Functions:
#   cp_build              builds (or validates the cached) binaries; sets CP_BIN (dir with
#                         kube-apiserver, kube-controller-manager, kubectl, etcd). Prints times.
#   cp_start              PKI + etcd + kube-apiserver + kube-controller-manager; waits until ready.
#                         Installs an EXIT trap that calls cp_stop (also on failure).
#   cp_stop               stops every process cp_start started, by pid.
#   cp_kubectl ARGS...    the built kubectl as cluster admin (system:masters).
#   cp_node_token NODE [SA] [NS] [DURATION]
#                         prints a ServiceAccount token bound to Node NODE (TokenRequest
#                         --bound-object-kind=Node). SA/NS default to the chart's agent
#                         ServiceAccount in the release namespace ($CP_AGENT_SA/$CP_NAMESPACE).
#   cp_sa_token SA [NS] [DURATION]   an unbound token of a ServiceAccount.
#   cp_kubeconfig_for_token TOKEN FILE [SERVER]  writes a kubeconfig using TOKEN and the CA.
#   cp_create_node NAME KERNEL OSIMAGE [LABEL=VALUE...]
#                         creates a Node object as a kubelet would (kubernetes.io/hostname,
#                         kubernetes.io/os=linux, kubernetes.io/arch=amd64 + given labels) and
#                         patches status.nodeInfo (kernelVersion, osImage, ...) and a Ready
#                         condition through --subresource=status.
#   cp_restart_apiserver / cp_stop_etcd / cp_start_etcd   fault injection.
# Variables (set after cp_start, exported):
#   CP_RUN_DIR            run dir (temp), holds pki/, logs/, audit.log, kubeconfigs
#   CP_APISERVER_PORT     the apiserver's loopback port (https://127.0.0.1:$CP_APISERVER_PORT)
#   CP_SERVER             https://127.0.0.1:$CP_APISERVER_PORT
#   CP_CA_CRT             CA certificate (the pod's ca.crt)
#   CP_KUBECONFIG         admin kubeconfig (also exported as KUBECONFIG)
#   CP_AUDIT_LOG          audit log (JSON lines, level Metadata/Request for our resources)
#   CP_GUEST_APISERVER_IP 10.0.2.100: in the serving cert's SANs; a QEMU guest reaches the
#                         apiserver with guestfwd=tcp:10.0.2.100:6443-tcp:127.0.0.1:$CP_APISERVER_PORT
#   CP_GUEST_APISERVER_PORT 6443
#   CP_NAMESPACE          release namespace (toa-system); CP_RELEASE release name (toa)
#   CP_AGENT_SA           the chart's agent ServiceAccount name
# Hook for scenarios that need QEMU-guest nodes: tests/cluster/run.sh sources
# tests/cluster/lib/nodes.sh when it exists and, after the chart is installed and the operator
# replicas run, calls `nodes_checks` if that function is defined. Inside it use
# `check NAME FUNCTION [ARGS...]` from tests/cluster/lib/harness.sh to record named checks
# (counted in the suite's `N passed, M failed`). The operator DaemonSet is
# $CP_NAMESPACE/toa-node-agent (read its pod spec for the agent's args/env).
# ---------------------------------------------------------------------------------------------

CP_K8S_VERSION=${CP_K8S_VERSION:-v1.36.3}
CP_ETCD_VERSION=${CP_ETCD_VERSION:-v3.6.13}
CP_CACHE=${CP_CACHE:-$TOA_CACHE_DIR/controlplane}
CP_GUEST_APISERVER_IP=10.0.2.100
CP_GUEST_APISERVER_PORT=6443
CP_NAMESPACE=${CP_NAMESPACE:-toa-system}
CP_RELEASE=${CP_RELEASE:-toa}
export CP_K8S_VERSION CP_ETCD_VERSION CP_CACHE CP_GUEST_APISERVER_IP CP_GUEST_APISERVER_PORT \
	CP_NAMESPACE CP_RELEASE

_cp_go_env() {
	export GOMODCACHE="$CP_CACHE/gomod" GOCACHE="$CP_CACHE/gocache" GOWORK=off \
		GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
}

_cp_bin_dir() { echo "$CP_CACHE/bin/k8s-$CP_K8S_VERSION-etcd-$CP_ETCD_VERSION"; }

# _cp_bin_valid DIR: every binary present, checksums match what the build recorded, and each
# reports the pinned version (a truncated or foreign file fails here instead of at start).
_cp_bin_valid() {
	local dir=$1 out
	[ -f "$dir/SHA256SUMS" ] || return 1
	(cd "$dir" && sha256sum --quiet -c SHA256SUMS) >/dev/null 2>&1 || return 1
	out=$("$dir/kube-apiserver" --version 2>&1) || return 1
	[ "$out" = "Kubernetes $CP_K8S_VERSION" ] || return 1
	out=$("$dir/etcd" --version 2>&1) || return 1
	case "$out" in *"etcd Version: ${CP_ETCD_VERSION#v}"*) ;; *) return 1 ;; esac
}

# _cp_k8s_wrapper DIR: the wrapper module that builds k8s.io/kubernetes commands. Kubernetes'
# own go.mod replaces its staging modules with local paths, which a dependent module ignores;
# map each of them to its published v0.MINOR.PATCH instead.
_cp_k8s_wrapper() {
	local dir=$1 info gomod staging_ver mods m
	info=$(go mod download -json "k8s.io/kubernetes@$CP_K8S_VERSION")
	gomod=$(printf '%s\n' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
	staging_ver="v0.${CP_K8S_VERSION#v1.}"
	mods=$(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+$#\1#p' "$gomod")
	[ -n "$mods" ] || {
		echo "controlplane: no staging replaces found in $gomod" >&2
		return 1
	}
	{
		echo "module toa.dev/controlplane/k8s"
		echo
		echo "go 1.26.0"
		echo
		echo "require k8s.io/kubernetes $CP_K8S_VERSION"
		echo
		for m in $mods; do echo "replace $m => $m $staging_ver"; done
	} >"$dir/go.mod"
	cat >"$dir/tools.go" <<'EOF'
//go:build tools

// Package tools keeps go mod tidy from dropping the commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
}

_cp_etcd_wrapper() {
	local dir=$1
	cat >"$dir/go.mod" <<EOF
module toa.dev/controlplane/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $CP_ETCD_VERSION
EOF
	cat >"$dir/main.go" <<'EOF'
// Command etcd runs upstream etcd's main (go install refuses etcd's module: replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
}

# cp_build: builds the four binaries once per version into $CP_CACHE/bin/..., atomically.
cp_build() {
	local dest tmp t0 t1 minor ld pkg
	dest=$(_cp_bin_dir)
	if _cp_bin_valid "$dest"; then
		CP_BIN=$dest
		export CP_BIN
		echo "controlplane: cached binaries $dest (k8s $CP_K8S_VERSION, etcd $CP_ETCD_VERSION)"
		return 0
	fi
	need_apt ca-certificates openssl python3
	command -v go >/dev/null || {
		echo "controlplane: Go is required to build the control plane (install golang >= 1.26)" >&2
		return 1
	}
	mkdir -p "$CP_CACHE/bin"
	_cp_go_env
	tmp=$(mktemp -d "$CP_CACHE/build.XXXXXX")
	mkdir -p "$tmp/k8s" "$tmp/etcd" "$tmp/out"
	minor=${CP_K8S_VERSION#v1.}
	minor=${minor%%.*}
	ld="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=" -X $pkg.gitVersion=$CP_K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	t0=$(date +%s)
	_cp_k8s_wrapper "$tmp/k8s"
	(cd "$tmp/k8s" && go mod tidy)
	t1=$(date +%s)
	echo "controlplane: k8s wrapper module tidy $((t1 - t0))s"
	(cd "$tmp/k8s" && go build -trimpath -ldflags "$ld" -o "$tmp/out/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kubectl)
	echo "controlplane: built kube-apiserver, kube-controller-manager, kubectl $CP_K8S_VERSION in $(($(date +%s) - t1))s"
	t1=$(date +%s)
	_cp_etcd_wrapper "$tmp/etcd"
	(cd "$tmp/etcd" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$tmp/out/etcd" .)
	echo "controlplane: built etcd $CP_ETCD_VERSION in $(($(date +%s) - t1))s"
	(cd "$tmp/out" && sha256sum kube-apiserver kube-controller-manager kubectl etcd >SHA256SUMS)
	rm -rf "$dest.old"
	[ -e "$dest" ] && mv "$dest" "$dest.old"
	mv "$tmp/out" "$dest"
	rm -rf "$tmp" "$dest.old"
	_cp_bin_valid "$dest" || {
		echo "controlplane: freshly built binaries in $dest fail validation" >&2
		return 1
	}
	CP_BIN=$dest
	export CP_BIN
	echo "controlplane: build total $(($(date +%s) - t0))s"
}
