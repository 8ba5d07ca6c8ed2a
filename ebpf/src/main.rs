//! `toa-ebpf`: attach, adopt, detach and inspect the TOA eBPF backend (see the library docs).
//!
//! ```text
//! toa-ebpf attach --object toa.bpf.o [--ipv4-kinds 200] [--nat64-kinds 253]
//!                 [--trusted-sources CIDRS] [--accept-any-source] [--ports LIST] [--dup-rule R]
//! toa-ebpf detach
//! toa-ebpf stats      # `name value` lines, like `toatest stats` for the module
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use toa_ebpf::params::{parse_kinds, parse_ports, parse_trusted, DupRule};
use toa_ebpf::{Params, Target};

#[derive(Parser)]
#[command(version, about = "TOA eBPF backend loader")]
struct Cli {
    /// bpffs directory of the pins.
    #[arg(long, default_value = toa_ebpf::PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load and attach (or adopt the pinned backend) and write the parameters.
    Attach {
        /// The compiled BPF object (ebpf/bpf/build.sh).
        #[arg(long)]
        object: PathBuf,
        /// cgroup v2 directory to attach to.
        #[arg(long, default_value = toa_ebpf::CGROUP_ROOT)]
        cgroup: PathBuf,
        #[arg(long, default_value = "200")]
        ipv4_kinds: String,
        #[arg(long, default_value = "253")]
        nat64_kinds: String,
        #[arg(long, default_value = "")]
        trusted_sources: String,
        #[arg(long)]
        accept_any_source: bool,
        #[arg(long, default_value = "")]
        ports: String,
        #[arg(long, default_value = "reject")]
        dup_rule: String,
    },
    /// Remove the pins (detaches).
    Detach,
    /// Print the counters summed over CPUs, one `name value` line each.
    Stats,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Attach {
            object,
            cgroup,
            ipv4_kinds,
            nat64_kinds,
            trusted_sources,
            accept_any_source,
            ports,
            dup_rule,
        } => {
            let t0 = Instant::now();
            let params = Params {
                ipv4_kinds: parse_kinds("ipv4_kinds", &ipv4_kinds)?,
                nat64_kinds: parse_kinds("nat64_kinds", &nat64_kinds)?,
                trusted_sources: parse_trusted(&trusted_sources)?,
                accept_any_source,
                ports: parse_ports(&ports)?,
                dup_rule: dup_rule.parse::<DupRule>()?,
            };
            let t = Target {
                object,
                cgroup,
                pin_dir: cli.pin_dir,
            };
            let outcome = toa_ebpf::attach(&t, &params).context("attach")?;
            println!("attach: {outcome:?} in {} ms", t0.elapsed().as_millis());
        }
        Cmd::Detach => {
            let any = toa_ebpf::detach(&cli.pin_dir).context("detach")?;
            println!(
                "detach: {}",
                if any {
                    "detached"
                } else {
                    "nothing was attached"
                }
            );
        }
        Cmd::Stats => {
            for (name, v) in toa_ebpf::read_counters(&cli.pin_dir).context("stats")? {
                println!("{name} {v}");
            }
        }
    }
    Ok(())
}
