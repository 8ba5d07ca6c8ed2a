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
# Inputs (optional): CP_K8S_VERSION (default v1.36.3; v1.31.14 builds too), CP_AUDIT_POLICY (a
# file replacing the suite's audit policy), CP_KCM_CONTROLLERS (kube-controller-manager's
# --controllers), CP_KUBECTL (the kubectl cp_kubectl runs; default the built one).
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
#   CP_NAMESPACE          release namespace (toa-system); CP_RELEASE release name (toa-operator)
#   CP_AGENT_SA           the chart's agent ServiceAccount (toa-operator-node-agent)
#   CP_OPERATOR_SA        the chart's operator ServiceAccount (toa-operator-operator)
#   CP_BIN                dir of the built binaries (kubectl: $CP_BIN/kubectl)
# Processes: every process started for the suite writes its pid to $CP_RUN_DIR/pids/NAME.pid
# (cp_spawn NAME LOG CMD... does it); cp_stop stops each by pid at exit, also on failure, so a
# QEMU guest started with cp_spawn (or whose pid is written there) is stopped too.
# Hook for scenarios that need QEMU-guest nodes: tests/cluster/run.sh sources
# tests/cluster/lib/nodes.sh, tests/cluster/lib/prometheus.sh and tests/cluster/scenarios-nodes.sh
# (each when it exists; TOA_REPO_DIR exported as the repo root) and, after the chart is
# installed, the API-level, leadership, fault and upgrade checks ran and the operator replicas
# run, calls `nodes_checks` if that function is defined (group `nodes`; the uninstall checks
# come after it). Operator replicas: tests/cluster/lib/operator.sh (op_port N = metrics port of
# replica N on 127.0.0.1, replicas 0 and 1). Inside it use
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
# Controllers kube-controller-manager runs (the scale benchmark leaves out the DaemonSet
# controller: without kubelets its Pending pods would measure it, not the operator).
CP_KCM_CONTROLLERS=${CP_KCM_CONTROLLERS:-serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,garbage-collector-controller,namespace-controller,daemonset-controller,clusterrole-aggregation-controller}
CP_RELEASE=${CP_RELEASE:-toa-operator}
# The chart's ServiceAccounts for release toa-operator (fullname = release name).
CP_OPERATOR_SA=${CP_OPERATOR_SA:-$CP_RELEASE-operator}
CP_AGENT_SA=${CP_AGENT_SA:-$CP_RELEASE-node-agent}
export CP_KCM_CONTROLLERS CP_K8S_VERSION CP_ETCD_VERSION CP_CACHE CP_GUEST_APISERVER_IP CP_GUEST_APISERVER_PORT \
	CP_NAMESPACE CP_RELEASE CP_OPERATOR_SA CP_AGENT_SA

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

# _cp_staging_version MODULE VERSION: VERSION when the module proxy serves it; else the newest
# earlier patch of the same minor that it serves (measured for v1.31.14: the proxy refuses
# k8s.io/kube-controller-manager, k8s.io/kube-scheduler, k8s.io/endpointslice (served at
# v0.31.13) and k8s.io/kube-proxy (v0.31.11) with 403 "This module version is not available").
# Says so on stderr. Prints nothing when no such version exists.
_cp_staging_version() {
	local m=$1 want=$2 minor have versions
	if go mod download -json "$m@$want" >/dev/null 2>&1; then
		echo "$want"
		return 0
	fi
	minor=${want%.*}
	# The proxy may refuse even the version list (403 for k8s.io/sample-cli-plugin).
	versions=$(go list -m -versions "$m" 2>/dev/null) || versions=""
	have=$(printf '%s\n' "$versions" | tr ' ' '\n' | awk -F. -v mi="$minor" -v p="${want##*.}" \
		'$1 "." $2 == mi && $3 ~ /^[0-9]+$/ && $3 < p { if ($3 + 0 > best + 0 || b == "") { best = $3; b = $0 } }
		 END { print b }')
	if [ -z "$have" ]; then
		# No replace: fine for a module the commands do not import (k8s.io/sample-apiserver);
		# for one they do, go mod tidy fails naming it.
		echo "controlplane: the module proxy serves no $m $minor.x up to $want; not replacing it" >&2
		return 0
	fi
	echo "controlplane: the module proxy refuses $m@$want; using $have" >&2
	echo "$have"
}

# _cp_k8s_wrapper DIR: the wrapper module that builds k8s.io/kubernetes commands. Kubernetes'
# own go.mod replaces its staging modules with local paths, which a dependent module ignores;
# map each of them to its published v0.MINOR.PATCH instead.
_cp_k8s_wrapper() {
	local dir=$1 info gomod staging_ver mods m v replaces=()
	info=$(go mod download -json "k8s.io/kubernetes@$CP_K8S_VERSION")
	gomod=$(printf '%s\n' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
	staging_ver="v0.${CP_K8S_VERSION#v1.}"
	mods=$(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/k8s\.io/[A-Za-z0-9._-]+$#\1#p' "$gomod")
	[ -n "$mods" ] || {
		echo "controlplane: no staging replaces found in $gomod" >&2
		return 1
	}
	for m in $mods; do
		v=$(_cp_staging_version "$m" "$staging_ver")
		[ -z "$v" ] || replaces+=("replace $m => $m $v")
	done
	{
		echo "module toa.dev/controlplane/k8s"
		echo
		echo "go 1.26.0"
		echo
		echo "require k8s.io/kubernetes $CP_K8S_VERSION"
		echo
		printf '%s\n' "${replaces[@]}"
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

# cp_needs: what building and starting the control plane installs (Go comes with the machine).
cp_needs() { need_apt ca-certificates openssl python3 curl bc iproute2 util-linux; }

# cp_build: builds the four binaries once per version into $CP_CACHE/bin/..., atomically. Sets
# CP_BUILD_KIND to cold (built now) or warm (cached); a build records its time in BUILD-TIME.
cp_build() {
	local dest tmp t0 t1 minor ld pkg
	dest=$(_cp_bin_dir)
	if _cp_bin_valid "$dest"; then
		CP_BIN=$dest
		export CP_BIN
		CP_BUILD_KIND=warm
		echo "controlplane: cached binaries $dest (k8s $CP_K8S_VERSION, etcd $CP_ETCD_VERSION)"
		if [ -f "$dest/BUILD-TIME" ]; then
			echo "controlplane: their cold build: $(cat "$dest/BUILD-TIME")"
		fi
		return 0
	fi
	cp_needs
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
	# Shown by later (warm) runs: what a fresh machine pays once.
	echo "$(($(date +%s) - t0))s on $(nproc) CPUs, $(date -u +%FT%TZ)" >"$tmp/out/BUILD-TIME"
	rm -rf "$dest.old"
	[ -e "$dest" ] && mv "$dest" "$dest.old"
	mv "$tmp/out" "$dest"
	rm -rf "$tmp" "$dest.old"
	_cp_bin_valid "$dest" || {
		echo "controlplane: freshly built binaries in $dest fail validation" >&2
		return 1
	}
	CP_BIN=$dest
	CP_BUILD_KIND=cold
	export CP_BIN
	echo "controlplane: build total $(($(date +%s) - t0))s"
}

# ---------------------------------------------------------------------------------------------
# Start / stop. Every process the suite starts writes its pid to $CP_RUN_DIR/pids/NAME.pid;
# cp_stop stops each of them by that pid (the nodes helper may put its QEMU pids there too).

_cp_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_cp_port_busy() { ss -Htln "sport = :$1" | grep -q .; }

# _cp_wait_port_free PORT: a stopped kube-apiserver can hold its port for seconds.
_cp_wait_port_free() {
	local port=$1 _
	for _ in $(seq 1 120); do
		_cp_port_busy "$port" || return 0
		sleep 0.5
	done
	echo "controlplane: port 127.0.0.1:$port still in use after 60s" >&2
	return 1
}

# cp_spawn NAME LOG CMD...: starts CMD in the background and records its pid.
cp_spawn() {
	local name=$1 log=$2
	shift 2
	"$@" >>"$log" 2>&1 &
	echo "$!" >"$CP_RUN_DIR/pids/$name.pid"
}

cp_pid() { cat "$CP_RUN_DIR/pids/$1.pid"; }

cp_alive() {
	local pid
	[ -f "$CP_RUN_DIR/pids/$1.pid" ] || return 1
	pid=$(cp_pid "$1")
	kill -0 "$pid" 2>/dev/null
}

# cp_kill NAME [SIGNAL] [GRACE_S]: signals the process NAME and (for TERM/KILL) waits until it
# is gone, SIGKILL after GRACE_S seconds (default 10).
cp_kill() {
	local name=$1 sig=${2:-TERM} grace=${3:-10} pid _
	[ -f "$CP_RUN_DIR/pids/$name.pid" ] || return 0
	pid=$(cp_pid "$name")
	kill -0 "$pid" 2>/dev/null || {
		rm -f "$CP_RUN_DIR/pids/$name.pid"
		return 0
	}
	kill -s "$sig" "$pid" 2>/dev/null || true
	case "$sig" in TERM | KILL) ;; *) return 0 ;; esac
	for _ in $(seq 1 $((grace * 10))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -s KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	wait "$pid" 2>/dev/null || true
	rm -f "$CP_RUN_DIR/pids/$name.pid"
}

_cp_pki() {
	local p=$CP_RUN_DIR/pki name subj
	mkdir -p "$p"
	openssl ecparam -name prime256v1 -genkey -noout -out "$p/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$p/ca.key" -sha256 -days 2 -subj "/CN=toa-cluster-suite-ca" \
		-out "$p/ca.crt" 2>/dev/null
	cat >"$p/serving.ext" <<EOX
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$CP_GUEST_APISERVER_IP,IP:10.96.0.1
extendedKeyUsage=serverAuth
EOX
	printf 'extendedKeyUsage=clientAuth\n' >"$p/client.ext"
	for name in apiserver admin controller-manager; do
		case $name in
		apiserver) subj=/CN=kube-apiserver ;;
		admin) subj=/O=system:masters/CN=ci-admin ;;
		controller-manager) subj=/CN=system:kube-controller-manager ;;
		esac
		openssl ecparam -name prime256v1 -genkey -noout -out "$p/$name.key" 2>/dev/null
		openssl req -new -key "$p/$name.key" -subj "$subj" -out "$p/$name.csr" 2>/dev/null
		if [ "$name" = apiserver ]; then
			openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
				-days 2 -sha256 -extfile "$p/serving.ext" -out "$p/$name.crt" 2>/dev/null
		else
			openssl x509 -req -in "$p/$name.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
				-days 2 -sha256 -extfile "$p/client.ext" -out "$p/$name.crt" 2>/dev/null
		fi
	done
	openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
	openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	# The operator runs as uid 65532 and needs the CA in its kubeconfig only (embedded).
	chmod 600 "$p"/*.key
}

_cp_kubeconfig_cert() {
	local file=$1 user=$2
	cat >"$file" <<EOX
apiVersion: v1
kind: Config
clusters:
- name: suite
  cluster:
    server: $CP_SERVER
    certificate-authority: $CP_RUN_DIR/pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $CP_RUN_DIR/pki/$user.crt
    client-key: $CP_RUN_DIR/pki/$user.key
contexts:
- name: suite
  context: {cluster: suite, user: $user}
current-context: suite
EOX
	# helm warns about group-readable kubeconfigs.
	chmod 600 "$file"
}

# cp_kubeconfig_for_token TOKEN FILE [SERVER]: a kubeconfig that embeds the CA and TOKEN.
cp_kubeconfig_for_token() {
	local token=$1 file=$2 server=${3:-$CP_SERVER}
	cat >"$file" <<EOX
apiVersion: v1
kind: Config
clusters:
- name: suite
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$CP_CA_CRT")
users:
- name: token
  user:
    token: $token
contexts:
- name: suite
  context: {cluster: suite, user: token}
current-context: suite
EOX
	chmod 644 "$file"
}

# CP_KUBECTL: another kubectl binary (kubectl v1.31 lacks `apply --subresource`, which the
# checks use: run a v1.31.14 control plane with the v1.36.3 build's kubectl).
cp_kubectl() { "${CP_KUBECTL:-$CP_BIN/kubectl}" --kubeconfig "$CP_KUBECONFIG" "$@"; }

_cp_audit_policy() {
	# A caller's own policy (the scale benchmark logs every write at Metadata level only).
	if [ -n "${CP_AUDIT_POLICY:-}" ]; then
		cp "$CP_AUDIT_POLICY" "$CP_RUN_DIR/audit-policy.yaml"
		return 0
	fi
	# Reads are not logged (the watch traffic would bury the writes); every write is logged at
	# Request level for our own resources (the suite reads who wrote which field) and at
	# Metadata level otherwise.
	cat >"$CP_RUN_DIR/audit-policy.yaml" <<'EOX'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Request
    resources:
      - group: "toa.dev"
      - group: "coordination.k8s.io"
        resources: ["leases"]
      - group: ""
        resources: ["nodes"]
      - group: "apps"
        resources: ["daemonsets"]
  - level: Metadata
EOX
}

cp_start_etcd() {
	local t0
	t0=$(date +%s.%N)
	_cp_wait_port_free "$CP_ETCD_PORT"
	_cp_wait_port_free "$CP_ETCD_PEER_PORT"
	cp_spawn etcd "$CP_RUN_DIR/logs/etcd.log" "$CP_BIN/etcd" --name suite \
		--data-dir "$CP_RUN_DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$CP_ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$CP_ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$CP_ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$CP_ETCD_PEER_PORT" \
		--initial-cluster "suite=http://127.0.0.1:$CP_ETCD_PEER_PORT" \
		--listen-metrics-urls "http://127.0.0.1:$CP_ETCD_METRICS_PORT" \
		--unsafe-no-fsync=true --log-level warn
	wait_until 60 "etcd health" curl -fsS "http://127.0.0.1:$CP_ETCD_PORT/health"
	printf 'controlplane: etcd ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
}

cp_stop_etcd() { cp_kill etcd TERM; }

cp_start_apiserver() {
	local t0
	t0=$(date +%s.%N)
	_cp_wait_port_free "$CP_APISERVER_PORT"
	cp_spawn kube-apiserver "$CP_RUN_DIR/logs/kube-apiserver.log" "$CP_BIN/kube-apiserver" \
		--etcd-servers "http://127.0.0.1:$CP_ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$CP_APISERVER_PORT" \
		--advertise-address 127.0.0.1 --endpoint-reconciler-type none \
		--tls-cert-file "$CP_RUN_DIR/pki/apiserver.crt" \
		--tls-private-key-file "$CP_RUN_DIR/pki/apiserver.key" \
		--client-ca-file "$CP_RUN_DIR/pki/ca.crt" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$CP_RUN_DIR/pki/sa.pub" \
		--service-account-signing-key-file "$CP_RUN_DIR/pki/sa.key" \
		--service-cluster-ip-range 10.96.0.0/16 \
		--authorization-mode Node,RBAC --allow-privileged=true \
		--enable-admission-plugins NodeRestriction \
		--disable-admission-plugins TaintNodesByCondition \
		--audit-policy-file "$CP_RUN_DIR/audit-policy.yaml" \
		--audit-log-path "$CP_AUDIT_LOG" --audit-log-format json --audit-log-maxsize 0 \
		--cert-dir "$CP_RUN_DIR/apiserver-certs" \
		--profiling=false
	wait_until 90 "kube-apiserver /readyz" cp_kubectl get --raw /readyz
	printf 'controlplane: kube-apiserver ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
}

# kube-apiserver drains its requests and watches on SIGTERM: give it time to stop cleanly.
cp_stop_apiserver() { cp_kill kube-apiserver TERM 60; }

cp_restart_apiserver() {
	cp_stop_apiserver
	cp_start_apiserver
}

cp_start_controller_manager() {
	local t0
	t0=$(date +%s.%N)
	_cp_wait_port_free "$CP_KCM_PORT"
	cp_spawn kube-controller-manager "$CP_RUN_DIR/logs/kube-controller-manager.log" \
		"$CP_BIN/kube-controller-manager" \
		--kubeconfig "$CP_RUN_DIR/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$CP_RUN_DIR/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$CP_RUN_DIR/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$CP_KCM_PORT" \
		--leader-elect=false --use-service-account-credentials=true \
		--service-account-private-key-file "$CP_RUN_DIR/pki/sa.key" \
		--root-ca-file "$CP_RUN_DIR/pki/ca.crt" \
		--cert-dir "$CP_RUN_DIR/kcm-certs" \
		--controllers "$CP_KCM_CONTROLLERS"
	wait_until 90 "kube-controller-manager (default ServiceAccount)" cp_kubectl -n default get sa default
	printf 'controlplane: kube-controller-manager ready in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
}

# cp_start: PKI, etcd, kube-apiserver, kube-controller-manager on 127.0.0.1; EXIT trap stops them.
cp_start() {
	local t0
	cp_needs
	[ -n "${CP_BIN:-}" ] || cp_build
	t0=$(date +%s.%N)
	CP_RUN_DIR=${CP_RUN_DIR:-$(mktemp -d /tmp/toa-cluster.XXXXXX)}
	# The operator runs as uid 65532: it must traverse the run dir to read its kubeconfig.
	chmod 755 "$CP_RUN_DIR"
	mkdir -p "$CP_RUN_DIR/pids" "$CP_RUN_DIR/logs"
	CP_APISERVER_PORT=${CP_APISERVER_PORT:-$(_cp_free_port)}
	CP_ETCD_PORT=${CP_ETCD_PORT:-$(_cp_free_port)}
	CP_ETCD_PEER_PORT=${CP_ETCD_PEER_PORT:-$(_cp_free_port)}
	CP_ETCD_METRICS_PORT=${CP_ETCD_METRICS_PORT:-$(_cp_free_port)}
	CP_KCM_PORT=${CP_KCM_PORT:-$(_cp_free_port)}
	CP_SERVER=https://127.0.0.1:$CP_APISERVER_PORT
	CP_CA_CRT=$CP_RUN_DIR/pki/ca.crt
	CP_KUBECONFIG=$CP_RUN_DIR/admin.kubeconfig
	CP_AUDIT_LOG=$CP_RUN_DIR/audit.log
	KUBECONFIG=$CP_KUBECONFIG
	export CP_RUN_DIR CP_APISERVER_PORT CP_ETCD_PORT CP_ETCD_PEER_PORT CP_ETCD_METRICS_PORT \
		CP_KCM_PORT CP_SERVER CP_CA_CRT CP_KUBECONFIG CP_AUDIT_LOG KUBECONFIG
	trap cp_stop EXIT
	_cp_pki
	_cp_kubeconfig_cert "$CP_KUBECONFIG" admin
	_cp_kubeconfig_cert "$CP_RUN_DIR/controller-manager.kubeconfig" controller-manager
	_cp_audit_policy
	echo "controlplane: run dir $CP_RUN_DIR, apiserver $CP_SERVER"
	cp_start_etcd
	cp_start_apiserver
	cp_start_controller_manager
	printf 'controlplane: started in %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
}

# cp_stop: stops every recorded process, newest kinds first, the control plane last.
cp_stop() {
	local f name
	[ -n "${CP_RUN_DIR:-}" ] && [ -d "$CP_RUN_DIR/pids" ] || return 0
	for f in "$CP_RUN_DIR"/pids/*.pid; do
		[ -e "$f" ] || continue
		name=$(basename "$f" .pid)
		case $name in etcd | kube-apiserver | kube-controller-manager) continue ;; esac
		# A stopped (SIGSTOP) process must be continued to act on SIGTERM.
		kill -s CONT "$(cat "$f")" 2>/dev/null || true
		cp_kill "$name" TERM
	done
	cp_kill kube-controller-manager TERM
	cp_kill kube-apiserver TERM 60
	cp_kill etcd TERM
}

# cp_sa_token SA [NS] [DURATION]
cp_sa_token() {
	cp_kubectl create token "$1" -n "${2:-$CP_NAMESPACE}" --duration "${3:-2h}"
}

# cp_node_token NODE [SA] [NS] [DURATION]: a token bound to Node NODE (the VAP reads its name).
cp_node_token() {
	cp_kubectl create token "${2:-$CP_AGENT_SA}" -n "${3:-$CP_NAMESPACE}" --duration "${4:-2h}" \
		--bound-object-kind Node --bound-object-name "$1"
}

# cp_create_node NAME KERNEL OSIMAGE [LABEL=VALUE...]: a Node as a kubelet registers it.
cp_create_node() {
	local name=$1 kernel=$2 os_image=$3 labels="" kv
	shift 3
	for kv in "$@"; do labels+="    ${kv%%=*}: \"${kv#*=}\""$'\n'; done
	cp_kubectl apply --server-side --field-manager kubelet -f - >/dev/null <<EOX
apiVersion: v1
kind: Node
metadata:
  name: $name
  labels:
    kubernetes.io/hostname: "$name"
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    beta.kubernetes.io/arch: amd64
$labels
EOX
	cp_kubectl patch node "$name" --subresource=status --type=merge -p "$(
		python3 -c 'import json,sys,datetime
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"status": {
  "nodeInfo": {"kernelVersion": sys.argv[1], "osImage": sys.argv[2], "operatingSystem": "linux",
    "architecture": "amd64", "containerRuntimeVersion": "none://0", "kubeletVersion": sys.argv[3],
    "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": sys.argv[4]},
  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
    "message": "toa cluster suite", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}))' \
			"$kernel" "$os_image" "$CP_K8S_VERSION" "$(cat /proc/sys/kernel/random/uuid)"
	)" >/dev/null
}
