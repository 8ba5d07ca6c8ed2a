//! toa-operator: turns ToaPolicies into per-node desired state (ToaNodeState), labels the
//! nodes that need an agent, owns the agent DaemonSet and aggregates node status back into
//! the policies.
//!
//! Layout: `plan` decides (pure), the rest performs I/O: `controller` wires watches and
//! reconciles, `apply` turns a plan into API requests, `daemonset` renders the agent,
//! `agents` tells whether agent pods can run, `lease` elects a leader, `metrics` + `server` expose health and metrics.

pub mod agents;
pub mod apply;
pub mod config;
pub mod controller;
pub mod daemonset;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod oci;
pub mod plan;
pub mod server;
pub mod uninstall;
