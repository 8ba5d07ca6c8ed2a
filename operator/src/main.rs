//! `toa-operator`: the cluster-side controller of toa-operator (see the crate docs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use kube::runtime::events::Reporter;
use toa_operator::config::AgentConfig;
use toa_operator::controller::{self, AgentTarget};
use toa_operator::daemonset;
use toa_operator::lease::{self, LeaseLock, LeaseTiming};
use toa_operator::metrics::Metrics;
use toa_operator::server::{self, HttpState, Liveness};
use toa_operator::uninstall;
use tokio::sync::watch;

/// How long stopping controllers may take to finish the reconciles in flight before they are
/// cancelled (one renew deadline).
const CONTROLLER_STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a pod's own namespace is mounted (fallback when neither flag nor env names it).
const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Turns ToaPolicies into per-node desired TOA module state (ToaNodeState), labels the nodes
/// that need the node agent, owns the agent DaemonSet and reports status on each policy.
#[derive(Debug, Parser)]
#[command(
    name = "toa-operator",
    version,
    about,
    long_about = None,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Agent config file (YAML): image, imagePullPolicy, imagePullSecrets, serviceAccountName,
    /// priorityClassName, tolerations, resources, nodeSelector, hostCachePath, extraHostPaths,
    /// metricsPort, logFormat, podLabels, podAnnotations. Validated at start-up.
    #[arg(long, env = "TOA_AGENT_CONFIG", value_name = "FILE", required = true)]
    agent_config: Option<PathBuf>,

    /// Namespace of the agent DaemonSet and the leader Lease (the operator's own namespace).
    /// Default: the pod's service-account namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE", global = true)]
    namespace: Option<String>,

    /// ConfigMap (in the operator's namespace) that owns the DaemonSet and the Lease the
    /// operator creates: the chart passes its agent ConfigMap, so that the garbage collector
    /// removes both with the Helm release. Unset: they have no owner.
    #[arg(long, env = "TOA_OWNER_CONFIGMAP", value_name = "NAME", global = true)]
    owner_configmap: Option<String>,

    /// Name of the node-agent DaemonSet the operator creates and keeps in shape.
    #[arg(
        long,
        global = true,
        env = "TOA_DAEMONSET_NAME",
        default_value = "toa-node-agent",
        value_name = "NAME"
    )]
    daemonset_name: String,

    /// Name of the coordination.k8s.io Lease used for leader election between replicas.
    #[arg(
        long,
        global = true,
        env = "TOA_LEASE_NAME",
        default_value = "toa-operator-leader",
        value_name = "NAME"
    )]
    lease_name: String,

    /// Listen address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "TOA_METRICS_ADDR",
        default_value = "[::]:8080",
        value_name = "ADDR"
    )]
    metrics_addr: SocketAddr,

    /// Seconds after which a leader that has finished no reconcile pass (one runs at least every
    /// 30 s) fails /healthz, so that the kubelet restarts it. Default: 3 x 30 s.
    #[arg(
        long,
        env = "TOA_STALL_TIMEOUT",
        default_value_t = controller::STALL_LIMIT.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    stall_timeout: u64,

    /// Seconds a node selected by a policy may be without a running agent pod (and without
    /// any report from its agent) before the policy's AgentsAvailable condition names it.
    #[arg(
        long,
        env = "TOA_AGENT_START_TIMEOUT",
        default_value_t = toa_operator::agents::DEFAULT_START_TIMEOUT.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    agent_start_timeout: u64,
    /// A node whose node Lease (namespace kube-node-lease, renewed by its kubelet every 10 s)
    /// is older than this is reported stale in its policy's status (staleNodes, condition
    /// NodesStale) and does not hold back the rollout; like the node lifecycle controller's
    /// --node-monitor-grace-period. 0 turns the check off (no Lease watch).
    #[arg(
        long,
        env = "TOA_NODE_LEASE_GRACE_SECONDS",
        default_value_t = 40,
        value_name = "SECONDS"
    )]
    node_lease_grace_seconds: u64,

    /// Log format: human-readable text or one JSON object per line. Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "TOA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepares `helm uninstall` (the chart's pre-delete hook runs it): takes the leader Lease
    /// so no replica leads again, removes the toa.dev/unload finalizer from every ToaPolicy and
    /// the toa.dev/agent label from every node, and deletes the agent DaemonSet. Modules stay
    /// loaded; the CRDs and custom resources stay (Helm keeps them).
    Uninstall {
        /// Seconds to wait after taking the Lease, so that a deposed leader has stopped writing
        /// (its renew deadline).
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        settle_seconds: u64,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `kubectl logs` and log files would show the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn resolve_namespace(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(ns) = flag.filter(|n| !n.is_empty()) {
        return Ok(ns);
    }
    match std::fs::read_to_string(SA_NAMESPACE_FILE) {
        Ok(ns) if !ns.trim().is_empty() => Ok(ns.trim().to_string()),
        _ => bail!(
            "no namespace: pass --namespace or set POD_NAMESPACE (the chart sets it from the downward API)"
        ),
    }
}

/// Turns `shutdown` true on SIGTERM or SIGINT.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);

    if let Some(Command::Uninstall { settle_seconds }) = &args.command {
        return run_uninstall(&args, Duration::from_secs(*settle_seconds)).await;
    }
    let agent_config_path = args
        .agent_config
        .clone()
        .context("--agent-config (or TOA_AGENT_CONFIG) is required")?;
    let agent_config = AgentConfig::load(&agent_config_path)?;
    let namespace = resolve_namespace(args.namespace.clone())?;
    let mut desired = daemonset::build(&agent_config, &args.daemonset_name, &namespace);
    // One config for both clients (the lease's differs only in its retry and timeouts).
    let config = kube::Config::infer()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let client =
        kube::Client::try_from(config.clone()).context("building the Kubernetes client")?;
    let owner = match &args.owner_configmap {
        Some(name) => Some(uninstall::resolve_owner(&client, &namespace, name).await?),
        None => None,
    };
    desired.metadata.owner_references = owner.clone().map(|o| vec![o]);

    let (shutdown_tx, shutdown) = watch::channel(false);
    let signals = tokio::spawn({
        let shutdown_tx = shutdown_tx.clone();
        async move {
            match wait_for_signal().await {
                Ok(sig) => tracing::info!(signal = sig, "shutting down"),
                Err(e) => tracing::error!(error = %e, "signal handling failed; shutting down"),
            }
            shutdown_tx.send_replace(true);
        }
    });

    let identity = lease::default_identity();
    let (leader_tx, leader) = watch::channel(false);
    let timing = LeaseTiming::default();
    let lock = LeaseLock::new(
        lease_client(config, timing)?,
        &namespace,
        &args.lease_name,
        &identity,
        timing,
    )
    .with_owner(owner);
    let fence = lock.fence();
    // The election stops (and releases the lease) only after the controllers have stopped, so
    // a successor never overlaps with our last writes.
    let (release_tx, release) = watch::channel(false);
    let election = tokio::spawn(lease::run(lock, leader_tx, release));

    let metrics = Arc::new(Metrics::new());
    let liveness = Arc::new(Liveness::new(Duration::from_secs(args.stall_timeout)));
    let (synced_tx, synced) = watch::channel(false);
    let http = tokio::spawn(server::serve(
        args.metrics_addr,
        HttpState {
            metrics: metrics.clone(),
            liveness: liveness.clone(),
            leader: leader.clone(),
            synced,
        },
        shutdown.clone(),
    ));
    tracing::info!(%identity, %namespace, lease = %args.lease_name, "waiting for leadership");

    let outcome = lead(
        client,
        fence,
        AgentTarget {
            desired,
            name: args.daemonset_name.clone(),
            namespace,
            start_timeout: Duration::from_secs(args.agent_start_timeout),
        },
        metrics,
        liveness,
        identity,
        (args.node_lease_grace_seconds > 0)
            .then(|| Duration::from_secs(args.node_lease_grace_seconds)),
        leader,
        shutdown.clone(),
        synced_tx,
    )
    .await;

    // Controllers have stopped: give the lease back and stop everything else.
    release_tx.send_replace(true);
    shutdown_tx.send_replace(true);
    signals.abort();
    let grace = Duration::from_secs(10);
    if tokio::time::timeout(grace, election).await.is_err() {
        tracing::warn!("leader election did not stop in time");
    }
    match tokio::time::timeout(grace, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics server failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server task failed"),
        Err(_) => tracing::warn!("metrics server did not stop in time"),
    }
    outcome
}

/// `toa-operator uninstall` (see [`uninstall`]).
async fn run_uninstall(args: &Args, settle: Duration) -> anyhow::Result<()> {
    let namespace = resolve_namespace(args.namespace.clone())?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let target = uninstall::Target {
        namespace,
        daemonset_name: args.daemonset_name.clone(),
        lease_name: args.lease_name.clone(),
        owner_configmap: args.owner_configmap.clone(),
        settle,
    };
    let report = uninstall::run(&client, &target).await?;
    tracing::info!(
        finalizers_removed = ?report.finalizers_removed,
        nodes_unlabelled = ?report.nodes_unlabelled,
        daemonset_deleted = report.daemonset_deleted,
        lease = report.lease,
        "uninstall prepared: the release can be deleted"
    );
    Ok(())
}

/// The Lease's own client: no retry layer (a renewal retried for minutes on 429/503/504 would
/// outlive the renew deadline, while the standby takes over after the lease duration) and a
/// read timeout of one renew deadline (each election step is bounded by it as well).
fn lease_client(mut config: kube::Config, timing: LeaseTiming) -> anyhow::Result<kube::Client> {
    config.default_retry = false;
    config.read_timeout = Some(timing.renew_deadline);
    config.connect_timeout = Some(timing.retry_period.max(Duration::from_secs(1)));
    kube::Client::try_from(config).context("building the leader election client")
}

/// Runs the controllers while leading, and stands by as a candidate while not: a lost lease
/// stops the controllers (every write is fenced by the lease as well) and waits for leadership
/// again, with fresh caches. Returns on shutdown.
#[allow(clippy::too_many_arguments)]
async fn lead(
    client: kube::Client,
    fence: lease::Fence,
    agent: AgentTarget,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    identity: String,
    node_lease_grace: Option<Duration>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    synced: watch::Sender<bool>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => { r.context("leader election stopped")?; }
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!("leading: starting controllers");
        liveness.leading(std::time::Instant::now());

        // Controllers stop on shutdown or on loss of leadership.
        let (stop_tx, stop) = watch::channel(false);
        let mut watcher = {
            let mut leader = leader.clone();
            let mut shutdown = shutdown.clone();
            let shutdown_now = shutdown.clone();
            tokio::spawn(async move {
                // A shutdown is never reported as a loss, even if both happen at once.
                let lost = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => false,
                    _ = leader.wait_for(|l| !*l) => !*shutdown_now.borrow(),
                };
                stop_tx.send_replace(true);
                lost
            })
        };
        let reporter = Reporter {
            controller: toa_crds::OPERATOR_FIELD_MANAGER.to_string(),
            instance: Some(identity.clone()),
        };
        let run = controller::run(
            client.clone(),
            agent.clone(),
            metrics.clone(),
            reporter,
            fence.clone(),
            liveness.clone(),
            node_lease_grace,
            stop,
            synced.clone(),
        );
        tokio::pin!(run);
        let lost = tokio::select! {
            _ = &mut run => watcher.await.context("leadership watcher")?,
            lost = &mut watcher => {
                let lost = lost.context("leadership watcher")?;
                // The controllers finish their reconciles in flight, within a bound: a request
                // hanging on an API server whose etcd is gone (and retried on 504) must not
                // keep this replica from standing by and leading again. Dropping them cancels
                // what is left (every write is fenced by the lease anyway).
                if tokio::time::timeout(CONTROLLER_STOP_GRACE, &mut run).await.is_err() {
                    tracing::warn!(grace = ?CONTROLLER_STOP_GRACE, "controllers did not stop in time: cancelled");
                }
                lost
            }
        };
        liveness.standing_by();
        synced.send_replace(false);
        if !lost {
            tracing::info!("controllers stopped");
            return Ok(());
        }
        tracing::warn!("lost leadership: controllers stopped, standing by as a candidate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented_with_its_env() {
        let cmd = Args::command();
        cmd.clone().debug_assert();
        let help = cmd.clone().render_long_help().to_string();
        for (flag, env) in [
            ("--agent-config", "TOA_AGENT_CONFIG"),
            ("--namespace", "POD_NAMESPACE"),
            ("--daemonset-name", "TOA_DAEMONSET_NAME"),
            ("--lease-name", "TOA_LEASE_NAME"),
            ("--metrics-addr", "TOA_METRICS_ADDR"),
            ("--log-format", "TOA_LOG_FORMAT"),
            ("--owner-configmap", "TOA_OWNER_CONFIGMAP"),
            ("--stall-timeout", "TOA_STALL_TIMEOUT"),
            ("--agent-start-timeout", "TOA_AGENT_START_TIMEOUT"),
            ("--node-lease-grace-seconds", "TOA_NODE_LEASE_GRACE_SECONDS"),
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
            assert!(help.contains(env), "{env} missing from --help:\n{help}");
        }
        for arg in cmd.get_arguments() {
            if arg.get_id() != "help" && arg.get_id() != "version" {
                assert!(arg.get_help().is_some(), "flag {} has no doc", arg.get_id());
            }
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let a = Args::try_parse_from(["toa-operator", "--agent-config", "/etc/toa/agent.yaml"])
            .expect("parse");
        assert_eq!(a.daemonset_name, "toa-node-agent");
        assert_eq!(a.lease_name, "toa-operator-leader");
        assert_eq!(a.metrics_addr.to_string(), "[::]:8080");
        assert!(matches!(a.log_format, LogFormat::Text));
        let e =
            Args::try_parse_from(["toa-operator", "--agent-config", "x", "--log-format", "xml"])
                .expect_err("bad format");
        assert!(e.to_string().contains("xml"));
        assert!(a.owner_configmap.is_none());
        assert_eq!(a.stall_timeout, 90, "3 x the 30 s housekeeping interval");
    }

    #[test]
    fn run_needs_the_agent_config_and_uninstall_does_not() {
        let e = Args::try_parse_from(["toa-operator"]).expect_err("missing --agent-config");
        assert!(e.to_string().contains("--agent-config"), "{e}");
        let a = Args::try_parse_from([
            "toa-operator",
            "uninstall",
            "--namespace",
            "toa-system",
            "--lease-name",
            "l",
            "--daemonset-name",
            "d",
            "--owner-configmap",
            "c",
        ])
        .expect("uninstall parses");
        assert!(matches!(
            a.command,
            Some(Command::Uninstall { settle_seconds: 10 })
        ));
        assert_eq!(a.namespace.as_deref(), Some("toa-system"));
        assert_eq!(
            (a.lease_name.as_str(), a.daemonset_name.as_str()),
            ("l", "d")
        );
        assert_eq!(a.owner_configmap.as_deref(), Some("c"));
    }
}
