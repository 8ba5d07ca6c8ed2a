//! Heap bytes per node of what the operator holds and computes for a large cluster, measured
//! offline (no apiserver) with dhat's heap statistics, to show where the peak RSS of
//! `tests/cluster/scale.sh` goes. Not part of the product.
//!
//! 1. the Node store: COUNT kubelet-sized Nodes (`common/kubelet.rs`, about 10 KB of JSON each)
//!    decoded into `NodeMeta` as the watch decodes them, in a reflector store;
//! 2. the ToaNodeState store: each node's state as the operator writes it
//!    (`apply::node_state_object`) with an agent's status (`common/agent.rs`), slimmed by
//!    `controller::slim_node_state`, in a reflector store;
//! 3. one `plan` pass with every state reported (a resync: nothing to change), and one after
//!    the policy's selector changes to a third of the nodes: the bytes its output holds and the
//!    peak above what was live before it.
//!
//!   cargo run --release -p toa-operator --example store_memory -- --count 20000
//!
//! Prints figures, asserts nothing. Bytes are the allocator's (requested sizes); the process's
//! RSS adds the allocator's own overhead and fragmentation.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::Resource;
use serde_json::Value;
use toa_crds::{ToaNodeState, ToaPolicy, ToaPolicySpec, POLICY_FINALIZER};
use toa_operator::apply::node_state_object;
use toa_operator::controller::slim_node_state;
use toa_operator::plan::{plan, ClusterSnapshot, NodeMeta, Plan};

#[path = "common/agent.rs"]
mod agent;
#[path = "common/kubelet.rs"]
mod kubelet;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Parser)]
#[command(about = "heap bytes per node of the operator's stores and plan passes")]
struct Args {
    /// Number of Nodes.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
}

/// Bytes live now.
fn live() -> usize {
    dhat::HeapStats::get().curr_bytes
}

fn report(what: &str, bytes: usize, count: usize) {
    println!(
        "{what:<52} {:>8.1} MiB {:>7} B/node",
        bytes as f64 / (1024.0 * 1024.0),
        bytes / count.max(1)
    );
}

fn policy(selector: LabelSelector, generation: i64) -> Arc<ToaPolicy> {
    let mut p = ToaPolicy::new(
        "scale",
        ToaPolicySpec {
            node_selector: selector,
            ..ToaPolicySpec::default()
        },
    );
    p.metadata.uid = Some("uid-scale".into());
    p.metadata.generation = Some(generation);
    p.metadata.finalizers = Some(vec![POLICY_FINALIZER.to_string()]);
    Arc::new(p)
}

/// `plan` over the stores; prints what its output holds and its peak above `before`.
fn measured_plan(
    what: &str,
    policy: Arc<ToaPolicy>,
    nodes: &Store<NodeMeta>,
    states: &Store<ToaNodeState>,
    count: usize,
) -> Plan {
    let snapshot = ClusterSnapshot {
        policies: vec![policy],
        nodes: nodes.state(),
        node_states: states.state(),
        ..ClusterSnapshot::default()
    };
    let before = live();
    let peak_before = dhat::HeapStats::get().max_bytes;
    let planned = plan(&snapshot, Timestamp::now());
    let after = dhat::HeapStats::get();
    report(
        &format!("{what}: plan output"),
        after.curr_bytes - before,
        count,
    );
    if after.max_bytes > peak_before {
        report(
            &format!("{what}: plan peak above live"),
            after.max_bytes - before,
            count,
        );
    } else {
        println!("{what}: plan peak below the earlier peak (not measurable here)");
    }
    planned
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _profiler = dhat::Profiler::builder().testing().build();
    let count = args.count;

    // 1. The Node store, one Node's JSON at a time (the watch decodes page by page).
    let base = live();
    let (nodes, mut node_writer) = reflector::store::<NodeMeta>();
    for i in 0..count {
        let name = format!("scale-{i:05}");
        let mut node = kubelet::node(&name, i);
        node["metadata"]["uid"] = Value::String(format!("uid-{name}"));
        node["metadata"]["resourceVersion"] = Value::String(format!("{}", 1000 + i));
        node["status"] = kubelet::status(&name, i)["status"].clone();
        let bytes = serde_json::to_vec(&node)?;
        let meta: NodeMeta = serde_json::from_slice(&bytes).context("decoding a Node")?;
        node_writer.apply_watcher_event(&watcher::Event::Apply(meta));
    }
    let node_store = live() - base;
    report("Node store (NodeMeta)", node_store, count);

    // 2. The ToaNodeState store, from the first plan's desired states.
    let all = policy(LabelSelector::default(), 1);
    let first = plan(
        &ClusterSnapshot {
            policies: vec![all.clone()],
            nodes: nodes.state(),
            ..ClusterSnapshot::default()
        },
        Timestamp::now(),
    );
    let base = live();
    let (states, mut state_writer) = reflector::store::<ToaNodeState>();
    for (name, desired) in &first.node_states {
        let mut object = node_state_object(name, desired)?;
        object["metadata"]["uid"] = Value::String(format!("state-{name}"));
        object["metadata"]["generation"] = Value::from(1);
        object["metadata"]["resourceVersion"] = Value::String("1".into());
        let mut state: ToaNodeState = serde_json::from_value(object)?;
        if let Some(status) = agent::status(&state) {
            state.status = serde_json::from_value(status["status"].clone())?;
        }
        slim_node_state(&mut state);
        state_writer.apply_watcher_event(&watcher::Event::Apply(state));
    }
    let state_store = live() - base;
    drop(first);
    report("ToaNodeState store (slimmed)", state_store, count);
    report("both stores", node_store + state_store, count);

    // 3. Plan passes over the stores.
    let resync = measured_plan("resync", all, &nodes, &states, count);
    drop(resync);
    let third = policy(
        LabelSelector {
            match_labels: Some([(kubelet::THIRD_LABEL.to_string(), "0".to_string())].into()),
            match_expressions: None,
        },
        2,
    );
    let select = measured_plan("selector to a third", third, &nodes, &states, count);
    println!(
        "selector to a third: {} states kept, {} ToaNodeState objects per {} nodes in the stores",
        select.node_states.len(),
        states.state().len(),
        nodes.state().len()
    );
    println!(
        "each NodeMeta holds {} labels",
        nodes
            .state()
            .first()
            .and_then(|n| n.meta().labels.as_ref().map(|l| l.len()))
            .unwrap_or_default()
    );
    Ok(())
}
