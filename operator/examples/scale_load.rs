//! Load generator and probe for `tests/cluster/scale.sh` (the scale benchmark on a real
//! apiserver). Not part of the product.
//!
//! - `nodes`: creates Node objects as a kubelet writes them (labels, spec, then a status with
//!   capacity, conditions, addresses, nodeInfo and 40 images: about 10 KB of JSON each).
//! - `agents`: plays every node's agent: writes each ToaNodeState's status (server-side apply
//!   on the status subresource, field manager `toa-node-agent`) whenever its spec generation is
//!   not yet reported: Loaded for `desiredState: Loaded`, Unloaded otherwise.
//! - `floor`: a plain concurrent client making the same writes as the operator and the agents
//!   for one phase (apply, select = selector change to a third, delete), each node's writes in
//!   their order, a fixed number of nodes in flight. Its time is the floor the operator's time
//!   is compared with.
//! - `wait`: watches the policy, the ToaNodeStates and the labelled Nodes until a phase is
//!   complete; prints the seconds since `--since-ms`.
//!
//! Nodes are named `PREFIX00000`...; node `i` carries `scale.toa.dev/third=i%3`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use toa_crds::{
    DesiredState, ModuleSettings, ToaNodeState, ToaNodeStateSpec, ToaPolicy, AGENT_LABEL,
    AGENT_LABEL_VALUE,
};
use toa_operator::apply::node_state_object;
use toa_operator::plan::DesiredNodeState;

#[path = "common/agent.rs"]
mod agent;
#[path = "common/kubelet.rs"]
mod kubelet;

#[derive(Parser)]
#[command(about = "load generator of tests/cluster/scale.sh")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Apply,
    Select,
    Delete,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create COUNT kubelet-sized Node objects.
    Nodes {
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value = "scale-")]
        prefix: String,
    },
    /// Simulated agents: report every ToaNodeState's spec as done, until killed.
    Agents {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// The floor: the writes of one phase by a plain concurrent client.
    Floor {
        #[arg(long, value_enum)]
        phase: Phase,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "scale-")]
        prefix: String,
        #[arg(long, default_value = "scale")]
        policy: String,
    },
    /// Wait until a phase is complete; prints `complete after S s`.
    Wait {
        #[arg(long, value_enum)]
        phase: Phase,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "scale")]
        policy: String,
        /// Unix time in milliseconds when the change was made.
        #[arg(long)]
        since_ms: u128,
        #[arg(long, default_value_t = 1800)]
        timeout_seconds: u64,
    },
}

fn node_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:05}")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Runs `tasks` with `concurrency` in flight; fails with the first error.
async fn run_all<F>(tasks: impl Iterator<Item = F>, concurrency: usize) -> anyhow::Result<usize>
where
    F: std::future::Future<Output = anyhow::Result<usize>>,
{
    futures::stream::iter(tasks)
        .buffer_unordered(concurrency.max(1))
        .try_fold(0usize, |n, w| async move { Ok(n + w) })
        .await
}

async fn create_nodes(
    client: Client,
    count: usize,
    concurrency: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client);
    let sample = serde_json::to_vec(&{
        let mut n = kubelet::node(&node_name(prefix, 0), 0);
        n["status"] = kubelet::status(&node_name(prefix, 0), 0)["status"].clone();
        n
    })?;
    let started = Instant::now();
    let writes = run_all(
        (0..count).map(|i| {
            let api = api.clone();
            let name = node_name(prefix, i);
            async move {
                let node: Node = serde_json::from_value(kubelet::node(&name, i))?;
                let pp = PostParams {
                    field_manager: Some("kubelet".into()),
                    ..PostParams::default()
                };
                match api.create(&pp, &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e).with_context(|| format!("creating Node {name}")),
                }
                let params = PatchParams {
                    field_manager: Some("kubelet".into()),
                    ..PatchParams::default()
                };
                api.patch_status(&name, &params, &Patch::Merge(kubelet::status(&name, i)))
                    .await
                    .with_context(|| format!("writing the status of Node {name}"))?;
                Ok(2)
            }
        }),
        concurrency,
    )
    .await?;
    println!(
        "nodes: created {count} Node objects ({} bytes of JSON each) with {writes} writes in {:.1}s",
        sample.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn write_agent_status(
    api: &Api<ToaNodeState>,
    name: &str,
    body: &Value,
) -> anyhow::Result<usize> {
    let pp = PatchParams::apply(toa_crds::AGENT_FIELD_MANAGER).force();
    match api.patch_status(name, &pp, &Patch::Apply(body)).await {
        Ok(_) => Ok(1),
        // Deleted meanwhile: nothing to report to (the real agent does the same).
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(1),
        Err(e) => Err(e).with_context(|| format!("writing the status of ToaNodeState {name}")),
    }
}

async fn agents(client: Client, concurrency: usize) -> anyhow::Result<()> {
    let api: Api<ToaNodeState> = Api::all(client);
    let written = Arc::new(AtomicUsize::new(0));
    let reported = written.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            println!(
                "agents: {} status writes so far",
                reported.load(Ordering::Relaxed)
            );
        }
    });
    watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(concurrency, |state| {
            let api = api.clone();
            let written = written.clone();
            async move {
                if let Some(body) = agent::status(&state) {
                    if let Err(e) = write_agent_status(&api, &state.name_any(), &body).await {
                        eprintln!("agents: {e:#}");
                    }
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await
}

/// One node's writes in a floor phase.
async fn floor_node(
    client: Client,
    phase: Phase,
    name: String,
    node_uid: String,
    state_uid: Option<String>,
    policy: String,
) -> anyhow::Result<usize> {
    let states: Api<ToaNodeState> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let pp = PatchParams::apply("toa-floor").force();
    let mut spec = ToaNodeStateSpec {
        node_name: name.clone(),
        policy,
        desired_state: DesiredState::Loaded,
        module: ModuleSettings::default().normalized(),
        replace_foreign_module: false,
        reload_allowed: false,
        backend: Default::default(),
    };
    if phase != Phase::Apply {
        spec.desired_state = DesiredState::Unloaded;
    }
    let desired = DesiredNodeState { spec, node_uid };
    let body = node_state_object(&name, &desired)?;
    let applied = states
        .patch(&name, &pp, &Patch::Apply(&body))
        .await
        .with_context(|| format!("applying ToaNodeState {name}"))?;
    let status = agent::status(&applied).context("the floor's state needs a status")?;
    write_agent_status(&states, &name, &status).await?;
    let label = |labelled: bool| {
        let mut metadata = json!({"name": name});
        if labelled {
            metadata["labels"] = json!({AGENT_LABEL: AGENT_LABEL_VALUE});
        }
        json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata})
    };
    if phase == Phase::Apply {
        nodes
            .patch(&name, &pp, &Patch::Apply(label(true)))
            .await
            .with_context(|| format!("labelling Node {name}"))?;
        return Ok(3);
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: state_uid.or(applied.metadata.uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    states
        .delete(&name, &dp)
        .await
        .with_context(|| format!("deleting ToaNodeState {name}"))?;
    nodes
        .patch(&name, &pp, &Patch::Apply(label(false)))
        .await
        .with_context(|| format!("unlabelling Node {name}"))?;
    Ok(4)
}

/// Nodes a phase changes.
fn changed(phase: Phase, i: usize) -> bool {
    match phase {
        Phase::Apply => true,
        Phase::Select => !i.is_multiple_of(3),
        Phase::Delete => i.is_multiple_of(3),
    }
}

async fn floor(
    client: Client,
    phase: Phase,
    count: usize,
    concurrency: usize,
    prefix: &str,
    policy: &str,
) -> anyhow::Result<()> {
    // Uids first (untimed): the operator has them in its stores.
    let node_meta: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let state_meta: Api<PartialObjectMeta<ToaNodeState>> = Api::all(client.clone());
    let mut node_uids = BTreeMap::new();
    let mut state_uids = BTreeMap::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = node_meta.list_metadata(&lp).await?;
        for n in page.items {
            node_uids.insert(n.name_any(), n.metadata.uid.unwrap_or_default());
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = state_meta.list_metadata(&lp).await?;
        for n in page.items {
            state_uids.insert(n.name_any(), n.metadata.uid.unwrap_or_default());
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let mut work = Vec::new();
    for i in (0..count).filter(|i| changed(phase, *i)) {
        let name = node_name(prefix, i);
        let Some(uid) = node_uids.get(&name) else {
            bail!("Node {name} does not exist: run `nodes` first");
        };
        work.push((name.clone(), uid.clone(), state_uids.get(&name).cloned()));
    }
    let nodes = work.len();
    let started = Instant::now();
    let writes = run_all(
        work.into_iter().map(|(name, uid, state_uid)| {
            floor_node(
                client.clone(),
                phase,
                name,
                uid,
                state_uid,
                policy.to_string(),
            )
        }),
        concurrency,
    )
    .await?;
    println!(
        "floor {phase:?}: {nodes} nodes, {writes} writes, {concurrency} nodes in flight: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn wait(
    client: Client,
    phase: Phase,
    count: usize,
    policy: &str,
    since_ms: u128,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (policies, pw) = reflector::store::<ToaPolicy>();
    let (states, sw) = reflector::store::<PartialObjectMeta<ToaNodeState>>();
    let (labelled, lw) = reflector::store::<PartialObjectMeta<Node>>();
    let pol_stream = reflector::reflector(
        pw,
        watcher(
            Api::<ToaPolicy>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={policy}")),
        ),
    );
    let state_stream = reflector::reflector(
        sw,
        watcher(
            Api::<PartialObjectMeta<ToaNodeState>>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let label_stream = reflector::reflector(
        lw,
        watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default().labels(&format!("{AGENT_LABEL}={AGENT_LABEL_VALUE}")),
        ),
    );
    let drive = futures::stream::select_all([
        pol_stream.default_backoff().map(|_| ()).boxed(),
        state_stream.default_backoff().map(|_| ()).boxed(),
        label_stream.default_backoff().map(|_| ()).boxed(),
    ])
    .for_each(|_| async {});
    let want = match phase {
        Phase::Apply => count,
        Phase::Select => count.div_ceil(3),
        Phase::Delete => 0,
    };
    let check = async {
        let deadline = Instant::now() + timeout;
        loop {
            let stores_ready = policies.wait_until_ready().await.is_ok()
                && states.wait_until_ready().await.is_ok()
                && labelled.wait_until_ready().await.is_ok();
            let pol = policies.get(&ObjectRef::new(policy));
            let policy_done = match (&pol, phase) {
                (None, Phase::Delete) => true,
                (Some(p), Phase::Apply | Phase::Select) => {
                    let s = p.status.clone().unwrap_or_default();
                    s.observed_generation == p.metadata.generation
                        && usize::try_from(s.selected_nodes).ok() == Some(want)
                        && usize::try_from(s.loaded_nodes).ok() == Some(want)
                }
                _ => false,
            };
            if stores_ready
                && policy_done
                && states.state().len() == want
                && labelled.state().len() == want
            {
                let secs = (now_ms().saturating_sub(since_ms)) as f64 / 1000.0;
                println!("wait {phase:?}: complete after {secs:.1}s ({want} ToaNodeStates, {want} labelled Nodes)");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "wait {phase:?}: not complete after {}s: policy {}, {} ToaNodeStates, {} labelled Nodes (want {want})",
                    timeout.as_secs(),
                    pol.map_or("absent".to_string(), |p| format!("{:?}", p.status)),
                    states.state().len(),
                    labelled.state().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = check => r,
        () = drive => bail!("watch streams ended"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default()
        .await
        .context("connecting to the apiserver (KUBECONFIG)")?;
    match args.cmd {
        Cmd::Nodes {
            count,
            concurrency,
            prefix,
        } => create_nodes(client, count, concurrency, &prefix).await,
        Cmd::Agents { concurrency } => agents(client, concurrency).await,
        Cmd::Floor {
            phase,
            count,
            concurrency,
            prefix,
            policy,
        } => floor(client, phase, count, concurrency, &prefix, &policy).await,
        Cmd::Wait {
            phase,
            count,
            policy,
            since_ms,
            timeout_seconds,
        } => {
            wait(
                client,
                phase,
                count,
                &policy,
                since_ms,
                Duration::from_secs(timeout_seconds),
            )
            .await
        }
    }
}
