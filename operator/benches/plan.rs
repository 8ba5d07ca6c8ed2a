//! Cost of one `plan` call (assignment, pacing, lifecycle and status
//! aggregation) on synthetic clusters of 100 to 20,000 nodes.
//! Goal: 5,000 nodes in under 50 ms on one core.
//!
//! The cluster looks like a real mixed fleet: 8 policies (a catch-all, zone
//! and role policies that overlap it, one with an In expression, one being
//! deleted), nodes with a handful of labels, 3% Windows nodes, and a node
//! state for 90% of the nodes in every phase, some asking for reloads.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;
use toa_crds::{
    DesiredState, KernelInfo, ModuleSettings, NodePhase, NodeReason, ToaNodeState,
    ToaNodeStateSpec, ToaNodeStateStatus, ToaPolicy, ToaPolicySpec,
};
use toa_operator::plan::{plan, ClusterSnapshot, NodeMeta};

const ZONES: [&str; 4] = ["zone-a", "zone-b", "zone-c", "zone-d"];
const ROLES: [&str; 3] = ["web", "edge", "batch"];
const KERNELS: [&str; 3] = ["6.1.0-56-amd64", "6.12.117+deb12-amd64", "5.10.0-35-amd64"];

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn policy(name: &str, priority: i32, selector: LabelSelector) -> Arc<ToaPolicy> {
    let mut p = ToaPolicy::new(
        name,
        ToaPolicySpec {
            node_selector: selector,
            priority,
            ..ToaPolicySpec::default()
        },
    );
    p.spec.rollout.max_unavailable = 5;
    p.metadata.generation = Some(3);
    p.metadata.creation_timestamp = Some(Time(ts(1_000 + i64::from(priority))));
    p.metadata.finalizers = Some(vec![toa_crds::POLICY_FINALIZER.to_string()]);
    Arc::new(p)
}

fn policies() -> Vec<Arc<ToaPolicy>> {
    let by_labels = |pairs: &[(&str, &str)]| LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    };
    let mut deleting = (*policy("retired", 900, by_labels(&[("pool", "retired")]))).clone();
    deleting.metadata.deletion_timestamp = Some(Time(ts(9_000)));
    vec![
        policy("all-linux", 0, LabelSelector::default()),
        policy(
            "zone-a",
            10,
            by_labels(&[("topology.kubernetes.io/zone", "zone-a")]),
        ),
        policy(
            "zone-b",
            10,
            by_labels(&[("topology.kubernetes.io/zone", "zone-b")]),
        ),
        policy("web", 20, by_labels(&[("role", "web")])),
        policy("edge", 30, by_labels(&[("role", "edge")])),
        policy(
            "edge-nat64",
            40,
            LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "nat64".into(),
                    operator: "In".into(),
                    values: Some(vec!["true".into(), "yes".into()]),
                }]),
            },
        ),
        policy("gpu", 50, by_labels(&[("gpu", "true")])),
        Arc::new(deleting),
    ]
}

fn cluster(n: usize) -> ClusterSnapshot {
    let pols = policies();
    let mut nodes = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("node-{i:06}");
        let mut pairs = vec![
            ("topology.kubernetes.io/zone", ZONES[i % ZONES.len()]),
            ("role", ROLES[(i / 7) % ROLES.len()]),
            ("kubernetes.io/hostname", name.as_str()),
            ("node.kubernetes.io/instance-type", "s5.large8"),
        ];
        pairs.push((
            "kubernetes.io/os",
            if i % 33 == 0 { "windows" } else { "linux" },
        ));
        if i % 11 == 0 {
            pairs.push(("nat64", "true"));
        }
        if i % 97 == 0 {
            pairs.push(("gpu", "true"));
        }
        if i % 5 != 0 {
            pairs.push((toa_crds::AGENT_LABEL, toa_crds::AGENT_LABEL_VALUE));
        }
        nodes.push(Arc::new(NodeMeta {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: Some(format!("0000-{i:06}")),
                labels: Some(labels(&pairs)),
                creation_timestamp: Some(Time(ts(500))),
                ..ObjectMeta::default()
            },
            spec: None,
        }));
        if i % 10 == 9 {
            continue;
        }
        let phase = match i % 20 {
            0 => NodePhase::Failed,
            1 => NodePhase::Building,
            2 => NodePhase::Pending,
            _ => NodePhase::Loaded,
        };
        let pol = &pols[i % pols.len()];
        let mut s = ToaNodeState::new(
            &name,
            ToaNodeStateSpec {
                node_name: name.clone(),
                policy: pol.metadata.name.clone().unwrap_or_default(),
                desired_state: DesiredState::Loaded,
                module: ModuleSettings::default(),
                replace_foreign_module: false,
                reload_allowed: i % 50 == 3,
                backend: Default::default(),
            },
        );
        s.metadata.generation = Some(2);
        s.status = Some(ToaNodeStateStatus {
            observed_generation: Some(2),
            phase: Some(phase),
            reason: (phase == NodePhase::Failed).then_some(NodeReason::HeadersMissing),
            message: (phase == NodePhase::Failed)
                .then(|| "kernel headers missing: install linux-headers-6.1.0-56-amd64".into()),
            kernel: Some(KernelInfo {
                release: KERNELS[i % KERNELS.len()].to_string(),
                ..KernelInfo::default()
            }),
            reload_pending: i % 25 == 3,
            ..ToaNodeStateStatus::default()
        });
        states.push(Arc::new(s));
    }
    ClusterSnapshot {
        policies: pols,
        nodes,
        node_states: states,
        ..ClusterSnapshot::default()
    }
}

fn bench_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(20);
    for n in [100usize, 1_000, 5_000, 20_000] {
        let snapshot = cluster(n);
        let now = ts(9_100);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &snapshot, |b, s| {
            b.iter(|| black_box(plan(black_box(s), now)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
