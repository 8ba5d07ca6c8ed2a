//! toa-node-agent entry point: flags, logging, the reconcile thread, the HTTP server, and
//! signal handling (SIGTERM stops the agent and never touches the module).

use anyhow::{bail, Context};
use clap::Parser;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use toa_node_agent::cli::{Cli, LogFormat};
use toa_node_agent::host::real::RealHost;
use toa_node_agent::host::Host;
use toa_node_agent::metrics::{Metrics, SharedView};
use toa_node_agent::reconcile::{AgentConfig, Reconciler};
use toa_node_agent::runner::{Runner, StatusSink, Update};
use toa_node_agent::{kube_mode, server, standalone};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs in files and on serial consoles stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Leftovers of a previous run that was killed mid-build or mid-cache-write.
fn clean_stale_work(cache_dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(cache_dir.join("work"));
    toa_node_agent::buildroot::clean_stale(cache_dir);
    if let Ok(entries) = std::fs::read_dir(cache_dir.join("modules")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGTERM handler");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let host: Arc<dyn Host> = Arc::new(RealHost::new(&cli.host_root).with_ebpf(toa_ebpf::Target {
        object: cli.ebpf_object.clone(),
        cgroup: cli.cgroup_root.clone(),
        pin_dir: cli.bpf_pin_dir.clone(),
    }));
    let view: SharedView = Arc::default();
    let metrics = Arc::new(Metrics::new(
        host.clone(),
        view.clone(),
        cli.per_cpu_metrics,
    ));
    std::fs::create_dir_all(&cli.cache_dir)
        .with_context(|| format!("creating --cache-dir {}", cli.cache_dir.display()))?;
    clean_stale_work(&cli.cache_dir);
    let cfg = AgentConfig {
        module_src: cli.module_src.clone(),
        cache_dir: cli.cache_dir.clone(),
        build_timeout: Duration::from_secs(cli.build_timeout),
        unload_timeout: Duration::from_secs(cli.unload_timeout),
        cache_max_age: (cli.cache_max_age_days > 0)
            .then(|| Duration::from_secs(cli.cache_max_age_days.saturating_mul(86_400))),
        build_root: cli.build_root,
        build_root_mirror: cli.build_root_mirror.clone(),
    };
    let reconciler = Reconciler::new(host.clone(), cfg, metrics.clone());
    let (tx, rx) = mpsc::channel::<Update>();
    let heartbeat = Duration::from_secs(cli.heartbeat_interval.max(1));

    let mut sink: Box<dyn StatusSink> = match &cli.desired {
        Some(path) => {
            tracing::info!(desired = %path.display(), status_file = ?cli.status_file, "standalone mode");
            let path = path.clone();
            let poll = Duration::from_secs(cli.poll_interval.max(1));
            std::thread::Builder::new()
                .name("desired-file".into())
                .spawn(move || standalone::watch_file(path, poll, tx))
                .context("starting the desired-file watcher")?;
            Box::new(standalone::FileSink::new(cli.status_file.clone()))
        }
        None => {
            let Some(node) = cli.node_name.clone() else {
                bail!("no desired state: pass --desired FILE (standalone) or set --node-name / NODE_NAME (Kubernetes mode)");
            };
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API (in-cluster service account or KUBECONFIG); for a plain host use --desired FILE",
            )?;
            let api: kube::Api<toa_crds::ToaNodeState> = kube::Api::all(client);
            tracing::info!(node = %node, heartbeat_seconds = heartbeat.as_secs(), "Kubernetes mode: watching ToaNodeState {node}");
            tokio::spawn(kube_mode::watch_desired(api.clone(), node.clone(), tx));
            Box::new(kube_mode::KubeSink::new(
                api,
                node,
                tokio::runtime::Handle::current(),
            ))
        }
    };
    let runner_view = view.clone();
    std::thread::Builder::new()
        .name("reconcile".into())
        .spawn(move || {
            let mut runner = Runner::new(reconciler, sink.as_mut(), runner_view, heartbeat);
            runner.run(&rx);
            tracing::info!("desired-state source closed; reconcile loop ended");
        })
        .context("starting the reconcile thread")?;

    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", cli.metrics_addr))?;
    tracing::info!(addr = %cli.metrics_addr, "serving /metrics /healthz /readyz");
    let app = server::router(server::AppState { metrics, view });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")?;
    // Leaving now never unloads: the module stays, and the next agent adopts it.
    tracing::info!("shutting down; the toa module is left as it is");
    Ok(())
}
