//! toa-node-agent: makes one node match its desired TOA module state.
//!
//! Every step that touches the machine goes through [`host::Host`], so each step is
//! unit-tested against [`host::fake::FakeHost`] and runs for real through
//! [`host::real::RealHost`]. The steps are small modules; [`reconcile`] strings them
//! together and [`runner`] drives it from a desired-state source (file or Kubernetes).

pub mod build;
pub mod buildroot;
pub mod cache;
pub mod cli;
pub mod compiler;
pub mod desired;
pub mod ebpf;
pub mod headers;
pub mod host;
pub mod kernel;
pub mod kmsg;
pub mod kube_mode;
pub mod metrics;
pub mod modinfo;
pub mod module;
pub mod params;
pub mod reconcile;
pub mod runner;
pub mod selftest;
pub mod server;
pub mod source;
pub mod standalone;
pub mod stats;
pub mod status;

#[cfg(test)]
pub(crate) mod testutil;

/// The name of the kernel module the agent manages (`toa.ko`, `/sys/module/toa`).
pub const MODULE_NAME: &str = "toa";

/// Agent version reported in the node status and the info metric.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
