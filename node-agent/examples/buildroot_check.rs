//! The agent's build-root path with the real tools, without a cluster or a guest: reads a node
//! root (`--host-root`: its /etc/os-release, apt sources and keys), fetches the build root for
//! `--release` with mmdebstrap into `--cache-dir` (or reuses it), and builds the toa module in
//! it with `chroot ROOT make`, exactly as `reconcile` does for a node whose kernel the image
//! cannot build for. Nothing is loaded. Used by tests/buildroot/local.sh.
//!
//!   cargo run -p toa-node-agent --example buildroot_check -- --host-root DIR --release REL \
//!       --cache-dir DIR --module-src kmod [--mirror URL] [--timeout SECONDS]
//!
//! Prints `path=build-root fetched=BOOL seconds=..`, then `built srcversion=.. vermagic=..`;
//! on failure `reason=MirrorUnreachable|BuildRootFailed|BuildFailed message=..` and exit 3.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use toa_node_agent::build::{self, Toolchain};
use toa_node_agent::buildroot::{self, BuildRootError};
use toa_node_agent::host::real::RealHost;
use toa_node_agent::host::Host;
use toa_node_agent::kernel::OsRelease;
use toa_node_agent::source::ModuleSource;

struct Args {
    host_root: PathBuf,
    release: String,
    cache_dir: PathBuf,
    module_src: PathBuf,
    mirror: Option<String>,
    timeout: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut host_root = None;
    let mut release = None;
    let mut cache_dir = None;
    let mut module_src = None;
    let mut mirror = None;
    let mut timeout = Duration::from_secs(1800);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--host-root" => host_root = Some(PathBuf::from(val()?)),
            "--release" => release = Some(val()?),
            "--cache-dir" => cache_dir = Some(PathBuf::from(val()?)),
            "--module-src" => module_src = Some(PathBuf::from(val()?)),
            "--mirror" => mirror = Some(val()?),
            "--timeout" => {
                timeout = Duration::from_secs(val()?.parse().context("--timeout: seconds")?)
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        host_root: host_root.context("--host-root is required")?,
        release: release.context("--release is required")?,
        cache_dir: cache_dir.context("--cache-dir is required")?,
        module_src: module_src.context("--module-src is required")?,
        mirror,
        timeout,
    })
}

fn fail(reason: &str, message: &str) -> ! {
    println!("reason={reason} message={}", message.replace('\n', " | "));
    std::process::exit(3)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let host = RealHost::new(&a.host_root);
    let os = OsRelease::parse(
        &host
            .read_to_string(std::path::Path::new("/etc/os-release"))
            .context("reading the node's /etc/os-release")?,
    );
    let Some(family) = buildroot::family_for(&os) else {
        bail!("no build-root family for {}", os.pretty_name);
    };
    let kc = buildroot::kernel_compiler(&host, None, &a.release);
    let explain = |e: BuildRootError| -> ! {
        let reason = match e {
            BuildRootError::MirrorUnreachable { .. } => "MirrorUnreachable",
            BuildRootError::Failed(_) => "BuildRootFailed",
        };
        fail(reason, &e.to_string())
    };
    let plan = family
        .plan(&host, &os, &a.release, kc.as_ref(), a.mirror.as_deref())
        .unwrap_or_else(|e| explain(e));
    println!(
        "plan suite={} packages={} mirrors={} sources={:?}",
        plan.key.suite,
        plan.packages.join(","),
        plan.mirror_list(),
        plan.sources
    );
    let t0 = Instant::now();
    let root = buildroot::ensure(&host, family.as_ref(), &plan, &a.cache_dir, a.timeout)
        .unwrap_or_else(|e| explain(e));
    println!(
        "path=build-root root={} kdir={} fetched={} seconds={:.1}",
        root.dir.display(),
        root.kdir.display(),
        root.fetched,
        t0.elapsed().as_secs_f64()
    );
    let sources = ModuleSource::scan(&a.module_src).context("scanning --module-src")?;
    let work = a.cache_dir.join("work");
    let t1 = Instant::now();
    match build::build(
        &host,
        &root.kdir,
        &sources,
        &work,
        a.timeout,
        Toolchain::Chroot(&root.dir),
    ) {
        Ok(b) => println!(
            "built srcversion={} vermagic={} seconds={:.1}",
            b.info.srcversion.as_deref().unwrap_or(""),
            b.info.vermagic.as_deref().unwrap_or(""),
            t1.elapsed().as_secs_f64()
        ),
        Err(e) => fail(
            "BuildFailed",
            &format!("{e}: {}", e.log_tail().unwrap_or("")),
        ),
    }
    Ok(())
}
