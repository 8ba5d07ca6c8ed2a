//! Prints the OCI runtime config (`config.json`) of the agent container that the operator's
//! DaemonSet runs, for crun/runc: the guest suites run the agent image root with it.
//!
//!   cargo run -p toa-operator --example agent-oci-config -- --rootfs /image \
//!       --entrypoint /usr/bin/toa-node-agent [--agent-config FILE] [--node-name N] \
//!       [--image-env PATH=...] [--arg A]... [--env K=V]... [--bind SRC:DST[:ro]]...

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use toa_operator::config::AgentConfig;
use toa_operator::daemonset::{build, CONTAINER_NAME};
use toa_operator::oci::{runtime_config, OciOptions};

#[derive(Parser)]
struct Args {
    /// The agent config as the chart writes it (default: `image: localhost/toa-node-agent`).
    #[arg(long)]
    agent_config: Option<PathBuf>,
    /// The image's root filesystem.
    #[arg(long)]
    rootfs: String,
    /// The image's entrypoint (repeat for more words).
    #[arg(long, required = true)]
    entrypoint: Vec<String>,
    /// The image's environment.
    #[arg(
        long,
        default_value = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )]
    image_env: Vec<String>,
    #[arg(long, default_value = "node")]
    node_name: String,
    /// An argument after the container's own.
    #[arg(long = "arg", allow_hyphen_values = true)]
    extra_args: Vec<String>,
    /// NAME=VALUE added to the environment.
    #[arg(long = "env")]
    extra_env: Vec<String>,
    /// SRC:DST[:ro] bind mount after the pod's.
    #[arg(long = "bind")]
    extra_binds: Vec<String>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let cfg = match &a.agent_config {
        Some(p) => AgentConfig::load(p).with_context(|| format!("agent config {}", p.display()))?,
        None => AgentConfig::parse("image: localhost/toa-node-agent\n", "default".as_ref())
            .context("default agent config")?,
    };
    let mut binds = Vec::new();
    for b in &a.extra_binds {
        let parts: Vec<&str> = b.split(':').collect();
        match parts.as_slice() {
            [s, d] => binds.push((s.to_string(), d.to_string(), false)),
            [s, d, "ro"] => binds.push((s.to_string(), d.to_string(), true)),
            _ => bail!("--bind {b}: expected SRC:DST or SRC:DST:ro"),
        }
    }
    let ds = build(&cfg, "toa-node-agent", "toa-system");
    let opts = OciOptions {
        rootfs: a.rootfs,
        entrypoint: a.entrypoint,
        image_env: a.image_env,
        node_name: a.node_name,
        extra_args: a.extra_args,
        extra_env: a.extra_env,
        extra_binds: binds,
    };
    let config = runtime_config(&ds, CONTAINER_NAME, &opts)?;
    println!("{}", serde_json::to_string_pretty(&config)?);
    Ok(())
}
