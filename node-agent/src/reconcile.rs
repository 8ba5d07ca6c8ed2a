//! One reconcile pass: compare the desired state with the kernel and act (adopt, load from
//! cache, build and load, change parameters, unload), returning the observed status.
//!
//! Invariants: the module is only removed when the desired state says Unloaded (or the
//! operator explicitly allowed a reload / replacing a foreign module); a module whose
//! srcversion matches our build is adopted, never reloaded.

use crate::build::{self, BuildError};
use crate::buildroot;
use crate::cache::{Cache, CacheKey, Miss};
use crate::compiler;
use crate::desired::{Backend, Desired, DesiredState};
use crate::headers::{self, Headers};
use crate::host::Host;
use crate::kernel::{self, KernelFacts};
use crate::metrics::{BuildOutcome, Metrics};
use crate::module::{self, Loaded};
use crate::params;
use crate::selftest;
use crate::source::ModuleSource as Sources;
use crate::status::{
    BuildStatus, KernelStatus, ModuleSource, ModuleStatus, NodeStatus, Phase, Reason, SelfTestInfo,
    SelfTestResult,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-check interval when everything is as desired (detects an external rmmod).
pub const RESYNC: Duration = Duration::from_secs(30);
/// Re-check interval after a failure.
pub const FAILURE_RETRY: Duration = Duration::from_secs(60);
/// A failed build for the same key is not retried before this (it would fail the same way).
pub const BUILD_RETRY: Duration = Duration::from_secs(600);
const UNLOAD_BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub module_src: PathBuf,
    pub cache_dir: PathBuf,
    pub build_timeout: Duration,
    pub unload_timeout: Duration,
    /// Cached builds for other kernel releases are removed after this long unused (see
    /// [`Cache::prune`]); None keeps them forever.
    pub cache_max_age: Option<Duration>,
    /// Build in a root from the node's own distribution when the image cannot (see
    /// [`buildroot`]); false reports HeadersMissing / CompilerMismatch instead.
    pub build_root: bool,
    /// The mirror for build roots instead of the node's apt source URIs (air-gapped clusters).
    pub build_root_mirror: Option<String>,
}

/// How often the cache is checked for builds of other releases to remove.
const CACHE_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// The result of one pass.
#[derive(Debug, Clone)]
pub struct Pass {
    pub status: NodeStatus,
    /// When to run the next pass if nothing changes before.
    pub requeue: Duration,
}

pub struct Reconciler {
    host: Arc<dyn Host>,
    cfg: AgentConfig,
    cache: Cache,
    metrics: Arc<Metrics>,
    /// srcversion and origin of the module this process loaded or adopted.
    current: Option<(String, ModuleSource)>,
    last_build: Option<BuildStatus>,
    build_failure: Option<(CacheKey, Instant, NodeStatus)>,
    unload_started: Option<Instant>,
    unload_attempts: u32,
    last_prune: Option<Instant>,
    /// The last self-test of the loaded module (re-run after a load, an adoption, a parameter
    /// change, and on every pass while it fails).
    self_test: Option<SelfTestInfo>,
    /// The parameters this process last wrote to the eBPF backend (None: it has not attached
    /// or adopted it yet, or detached it since).
    ebpf_params: Option<toa_ebpf::Params>,
    /// Backend Auto's pick on this node for this process, and why (the kernel's abilities do
    /// not change while it runs, so the probe runs once; a failed eBPF attach turns it into
    /// Module).
    auto_pick: Option<(Backend, String)>,
}

/// Intermediate results inside a pass: a terminal status, or a value to continue with.
/// Err is not an error but "this pass ends here with this status"; there is one per pass,
/// so its size does not matter (hence the clippy allowances on the functions using it).
type Step<T> = Result<T, Pass>;

fn fail(reason: Reason, message: impl Into<String>) -> Pass {
    Pass {
        status: NodeStatus {
            phase: Phase::Failed,
            reason: Some(reason),
            message: Some(message.into()),
            ..Default::default()
        },
        requeue: FAILURE_RETRY,
    }
}

fn kernel_status(f: &KernelFacts) -> KernelStatus {
    KernelStatus {
        release: f.release.clone(),
        version: f.version.clone(),
        boot_id: f.boot_id.clone(),
        os_image: f.os.pretty_name.clone(),
        lockdown: f.lockdown.clone(),
        secure_boot: f.secure_boot,
    }
}

impl Reconciler {
    pub fn new(host: Arc<dyn Host>, cfg: AgentConfig, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::new(&cfg.cache_dir);
        Self {
            host,
            cfg,
            cache,
            metrics,
            current: None,
            last_build: None,
            build_failure: None,
            unload_started: None,
            unload_attempts: 0,
            last_prune: None,
            self_test: None,
            ebpf_params: None,
            auto_pick: None,
        }
    }

    /// Runs one pass. `progress` receives intermediate statuses (Building, Loading, Unloading).
    pub fn reconcile(&mut self, desired: &Desired, progress: &mut dyn FnMut(&NodeStatus)) -> Pass {
        let facts = match kernel::gather(self.host.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                return self.finish(
                    fail(Reason::UnsupportedKernel, e.to_string()),
                    None,
                    desired,
                )
            }
        };
        let mut pass = match desired.spec.desired_state {
            DesiredState::Unloaded => match self.detach_ebpf(progress) {
                Err(p) => p,
                Ok(detached) => {
                    let mut p = self.unload_pass(desired, progress);
                    if detached {
                        let rest = p.status.message.take().unwrap_or_default();
                        p.status.message = Some(format!("eBPF backend detached; {rest}"));
                    }
                    p
                }
            },
            DesiredState::Loaded => {
                self.unload_started = None;
                self.unload_attempts = 0;
                let (backend, mut why) = self.pick_backend(desired);
                let step = match backend {
                    Backend::Module => self.module_pass(desired, &facts, progress),
                    Backend::Ebpf => match self.ebpf_pass(desired, progress) {
                        // Auto falls back to the module when the programs cannot be attached
                        // after all (the probe loads them, but attaching can still fail).
                        Err(p) if why.is_some() && p.status.reason == Some(Reason::LoadFailed) => {
                            let e = p.status.message.unwrap_or_default();
                            let fallback = format!("Auto picked Module: {e}");
                            tracing::warn!(reason = %fallback, "backend Auto falls back to the module");
                            self.auto_pick = Some((Backend::Module, fallback.clone()));
                            why = Some(fallback);
                            self.module_pass(desired, &facts, progress)
                        }
                        step => step,
                    },
                };
                let mut pass = match step {
                    Ok(p) | Err(p) => p,
                };
                if let Some(why) = why {
                    pass.status.message = Some(match pass.status.message.take() {
                        Some(m) => format!("{m} [{why}]"),
                        None => format!("[{why}]"),
                    });
                }
                pass
            }
        };
        // Keep srcversion and parameters visible whenever a module is loaded.
        if pass.status.module.is_none() {
            pass.status.module = self.loaded_module_status();
        }
        pass.status.backend = self.serving_backend(desired);
        if let (Some(b), Some(m)) = (pass.status.backend, pass.status.message.as_mut()) {
            if !m.starts_with("backend ") {
                *m = format!("backend {b}: {m}");
            }
        }
        self.finish(pass, Some(&facts), desired)
    }

    /// The backend that serves the node now: the eBPF one when attached, the module when
    /// loaded; while both are (a switch in progress) the desired one.
    fn serving_backend(&self, desired: &Desired) -> Option<Backend> {
        let ebpf = self.host.ebpf_attached();
        let module = module::loaded(self.host.as_ref()).is_some();
        match (ebpf, module) {
            (true, true) => Some(self.resolved_backend(desired)),
            (true, false) => Some(Backend::Ebpf),
            (false, true) => Some(Backend::Module),
            (false, false) => None,
        }
    }

    fn finish(&self, mut pass: Pass, facts: Option<&KernelFacts>, desired: &Desired) -> Pass {
        pass.status.kernel = facts.map(kernel_status);
        pass.status.observed_generation = Some(desired.generation);
        pass.status.agent_version = crate::AGENT_VERSION.to_string();
        if pass.status.build.is_none() {
            pass.status.build = self.last_build.clone();
        }
        pass
    }

    fn loaded_module_status(&self) -> Option<ModuleStatus> {
        let l = module::loaded(self.host.as_ref())?;
        let srcversion = l.srcversion.unwrap_or_default();
        let source = match &self.current {
            Some((sv, src)) if *sv == srcversion => *src,
            _ => ModuleSource::Adopted,
        };
        Some(ModuleStatus {
            srcversion,
            parameters: params::read_loaded(self.host.as_ref()),
            source,
        })
    }

    fn status_with(&self, phase: Phase, message: impl Into<String>) -> NodeStatus {
        NodeStatus {
            phase,
            message: Some(message.into()),
            ..Default::default()
        }
    }

    // ---- Unloaded -------------------------------------------------------------------

    fn unload_pass(&mut self, desired: &Desired, progress: &mut dyn FnMut(&NodeStatus)) -> Pass {
        let Some(loaded) = module::loaded(self.host.as_ref()) else {
            self.unload_started = None;
            self.unload_attempts = 0;
            self.current = None;
            return Pass {
                status: self.status_with(Phase::Unloaded, "no toa module is loaded"),
                requeue: RESYNC,
            };
        };
        if !self.is_ours(&loaded) && !desired.spec.replace_foreign_module {
            let mut status = self.status_with(
                Phase::Unloaded,
                format!(
                    "a toa module not built by this agent (srcversion {}, {}) is loaded and left untouched; set replaceForeignModule to remove it",
                    loaded.srcversion.as_deref().unwrap_or("none"),
                    self.foreign_origin()
                ),
            );
            status.reason = Some(Reason::ForeignModule);
            return Pass {
                status,
                requeue: RESYNC,
            };
        }
        let started = *self.unload_started.get_or_insert_with(Instant::now);
        if self.unload_attempts == 0 {
            progress(&self.status_with(Phase::Unloading, "unloading the toa module"));
        }
        self.unload_attempts += 1;
        match module::unload_once(self.host.as_ref()) {
            Ok(()) => {
                tracing::info!(attempts = self.unload_attempts, "toa module unloaded");
                self.unload_started = None;
                self.unload_attempts = 0;
                self.current = None;
                Pass {
                    status: self.status_with(Phase::Unloaded, "toa module unloaded"),
                    requeue: RESYNC,
                }
            }
            Err(e) if module::unload_retryable(e) => {
                let users = loaded
                    .refcnt
                    .map(|r| format!(" ({r} users)"))
                    .unwrap_or_default();
                let backoff = Duration::from_secs(1u64 << self.unload_attempts.min(5))
                    .min(UNLOAD_BACKOFF_MAX);
                if started.elapsed() >= self.cfg.unload_timeout {
                    let mut p = fail(
                        Reason::ModuleBusy,
                        format!(
                            "the toa module is still in use{users} after {}s ({e}); close the connections or processes using it; retrying",
                            self.cfg.unload_timeout.as_secs()
                        ),
                    );
                    p.requeue = UNLOAD_BACKOFF_MAX;
                    return p;
                }
                let mut status = self.status_with(
                    Phase::Unloading,
                    format!(
                        "the toa module is in use{users} ({e}); retrying in {}s",
                        backoff.as_secs()
                    ),
                );
                status.reason = Some(Reason::ModuleBusy);
                Pass {
                    status,
                    requeue: backoff,
                }
            }
            Err(e) => fail(
                Reason::UnloadFailed,
                format!("delete_module(toa) failed: {e}"),
            ),
        }
    }

    /// Before a load with no `toa` module present: a module of another name (a vendor's
    /// `ipvs_toa`, say) that already registered option 4096 would make our load fail with
    /// EBUSY halfway through; it is reported as ForeignModule instead, with the likely
    /// holders by name. The agent never unloads a module of another name, whatever
    /// replaceForeignModule says.
    #[allow(clippy::result_large_err)]
    fn check_sockopt_free(&self) -> Step<()> {
        match self.host.ip_sockopt_registered(module::TOA_SOCKOPT) {
            Ok(false) => Ok(()),
            Ok(true) => {
                let holders = module::toa_like_modules(self.host.as_ref());
                let named = if holders.is_empty() {
                    "no module name mentions toa in /proc/modules".to_string()
                } else {
                    format!("likely {}", holders.join(", "))
                };
                Err(fail(
                    Reason::ForeignModule,
                    format!(
                        "socket option {} (IPPROTO_IP) is already registered by another module ({named}): a TOA module of another name is loaded. Unload it (rmmod), then the agent loads toa; the agent never unloads modules of other names",
                        module::TOA_SOCKOPT
                    ),
                ))
            }
            // Not knowing is no reason to refuse: the load itself reports EBUSY if taken.
            Err(e) => {
                tracing::warn!(error = %e, "cannot check socket option 4096 before loading");
                Ok(())
            }
        }
    }

    /// Removes cached builds and build roots of other kernel releases unused for
    /// `cache_max_age`, at most once per [`CACHE_PRUNE_INTERVAL`]. A node that rebooted into
    /// a new kernel keeps its old builds meanwhile (a rollback loads without a build) and never
    /// touches them otherwise.
    fn prune_cache(&mut self, running_release: &str) {
        let Some(max_age) = self.cfg.cache_max_age else {
            return;
        };
        if self
            .last_prune
            .is_some_and(|t| t.elapsed() < CACHE_PRUNE_INTERVAL)
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        for meta in self
            .cache
            .prune(running_release, max_age, std::time::SystemTime::now())
        {
            tracing::info!(release = %meta.release, srcversion = %meta.srcversion, "removed a cached build of another kernel release, unused for longer than --cache-max-age-days");
        }
        for key in buildroot::prune(
            &self.cfg.cache_dir,
            running_release,
            max_age,
            std::time::SystemTime::now(),
        ) {
            tracing::info!(root = %key.dir_name(), "removed the build root of another kernel release, unused for longer than --cache-max-age-days");
        }
    }

    /// Where a loaded module of another origin comes from (see [`module::foreign_origin`]).
    fn foreign_origin(&self) -> String {
        match self.host.uname() {
            Ok(u) => module::foreign_origin(self.host.as_ref(), &u.release),
            Err(e) => format!("origin unknown: uname failed: {e}"),
        }
    }

    /// Whether a loaded toa came from this agent (this process, or any build in the cache).
    fn is_ours(&self, loaded: &Loaded) -> bool {
        let Some(sv) = &loaded.srcversion else {
            return false;
        };
        matches!(&self.current, Some((cur, _)) if cur == sv)
            || self.cache.known_srcversions().contains(sv)
    }

    // ---- Loaded ---------------------------------------------------------------------

    #[allow(clippy::result_large_err)]
    fn load_pass(
        &mut self,
        desired: &Desired,
        facts: &KernelFacts,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<Pass> {
        let sources = Sources::scan(&self.cfg.module_src)
            .map_err(|e| fail(Reason::BuildFailed, e.to_string()))?;
        let key = CacheKey {
            release: facts.release.clone(),
            version: facts.version.clone(),
            source_digest: sources.digest.clone(),
        };
        self.prune_cache(&facts.release);
        let loaded = module::loaded(self.host.as_ref());
        if let Some(l) = &loaded {
            if l.initstate != "live" {
                return Ok(Pass {
                    status: self.status_with(
                        Phase::Loading,
                        format!("the toa module is in state {:?}; waiting", l.initstate),
                    ),
                    requeue: Duration::from_secs(2),
                });
            }
        }
        if loaded.is_none() {
            self.check_sockopt_free()?;
        }
        // Adoption needs only the expected srcversion: from the cache, without compiling.
        let cached = self.cached(&key);
        if let (Some(l), Some(entry)) = (&loaded, &cached) {
            if l.srcversion.as_deref() == Some(entry.meta.srcversion.as_str()) {
                return Ok(self.keep_loaded(desired, &entry.meta.srcversion, false));
            }
        }
        if let Some(l) = &loaded {
            let sv = l.srcversion.clone().unwrap_or_default();
            if !self.is_ours(l) {
                if !desired.spec.replace_foreign_module {
                    return Err(fail(
                        Reason::ForeignModule,
                        format!(
                            "a toa module not built by this agent is loaded (srcversion {}, {}); it is left untouched. Remove it, or set replaceForeignModule to let the agent replace it",
                            l.srcversion.as_deref().unwrap_or("none"),
                            self.foreign_origin()
                        ),
                    ));
                }
                if !desired.spec.reload_allowed {
                    // Replacing is a disruptive reload: it waits for the operator's grant. A
                    // planned migration waiting for its turn is not a failure: phase Pending
                    // (not counted as failed, no failure alert; the foreign module keeps
                    // serving meanwhile).
                    let mut p = fail(
                        Reason::ReplacePending,
                        format!("a foreign toa module (srcversion {sv}, {}) is loaded and keeps serving; replacing it is requested and waits for its paced turn (rollout.maxUnavailable)", self.foreign_origin()),
                    );
                    p.status.phase = Phase::Pending;
                    p.status.reload_pending = true;
                    return Err(p);
                }
            } else if cached.is_some() && !desired.spec.reload_allowed {
                // An older build of ours: keep serving, ask the operator for a reload.
                return Ok(self.keep_older(desired, &sv));
            }
        }
        // We need our own image: from the cache, or built now.
        let (image, srcversion, source) = match cached {
            Some(entry) => (entry.path, entry.meta.srcversion, ModuleSource::Cache),
            None => self.build_and_store(&key, &sources, facts, progress)?,
        };
        if let Some(l) = &loaded {
            if l.srcversion.as_deref() == Some(srcversion.as_str()) {
                // Learned our srcversion by building (cache was empty): adopt.
                return Ok(self.keep_loaded(desired, &srcversion, false));
            }
            if !desired.spec.reload_allowed {
                // Only an older build of ours reaches here (foreign ones returned above).
                return Ok(self.keep_older(desired, l.srcversion.as_deref().unwrap_or("")));
            }
            // Replace (foreign allowed) or reload (operator allowed).
            progress(&self.status_with(
                Phase::Unloading,
                "unloading the loaded toa module to replace it",
            ));
            if let Err(e) = module::unload_once(self.host.as_ref()) {
                let mut p = fail(
                    if module::unload_retryable(e) {
                        Reason::ModuleBusy
                    } else {
                        Reason::UnloadFailed
                    },
                    format!("cannot unload the loaded toa module to replace it: {e}; retrying"),
                );
                p.requeue = UNLOAD_BACKOFF_MAX;
                return Err(p);
            }
        }
        progress(&self.status_with(
            Phase::Loading,
            format!("loading toa.ko from {}", crate::status::source_name(source)),
        ));
        Ok(self.load_image(desired, facts, &image, &srcversion, source))
    }

    fn cached(&self, key: &CacheKey) -> Option<crate::cache::CacheEntry> {
        match self.cache.lookup(key) {
            Ok(e) => Some(e),
            Err(Miss::Absent) => None,
            Err(Miss::Corrupt(why)) => {
                tracing::warn!(reason = %why, "cached module failed verification; removed, will rebuild");
                None
            }
        }
    }

    /// Builds the module and stores it in the cache; returns (path, srcversion, Built).
    #[allow(clippy::result_large_err)]
    fn build_and_store(
        &mut self,
        key: &CacheKey,
        sources: &Sources,
        facts: &KernelFacts,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<(PathBuf, String, ModuleSource)> {
        if let Some((k, when, status)) = &self.build_failure {
            if k == key && when.elapsed() < BUILD_RETRY {
                return Err(Pass {
                    status: status.clone(),
                    requeue: FAILURE_RETRY,
                });
            }
        }
        let (kdir, root) = self.toolchain(key, facts, progress)?;
        let toolchain = match &root {
            Some(r) => build::Toolchain::Chroot(&r.dir),
            None => build::Toolchain::Image,
        };
        let place = match &root {
            Some(r) => format!("{} in the build root {}", kdir.display(), r.dir.display()),
            None => kdir.display().to_string(),
        };
        progress(&self.status_with(
            Phase::Building,
            format!("building toa.ko for {} against {place}", facts.release),
        ));
        tracing::info!(release = %facts.release, kdir = %kdir.display(), build_root = ?root.as_ref().map(|r| &r.dir), "building the toa module");
        let work = self.cfg.cache_dir.join("work");
        let started = Instant::now();
        let result = build::build(
            self.host.as_ref(),
            &kdir,
            sources,
            &work,
            self.cfg.build_timeout,
            toolchain,
        );
        let secs = started.elapsed().as_secs_f64();
        let built = match result {
            Ok(b) => b,
            Err(e) => {
                let (reason, outcome) = match e {
                    BuildError::TimedOut { .. } => (Reason::BuildTimeout, BuildOutcome::Timeout),
                    _ => (Reason::BuildFailed, BuildOutcome::Failure),
                };
                self.metrics.record_build(outcome, secs);
                let log_tail = e.log_tail().map(str::to_string);
                if let Some(t) = &log_tail {
                    tracing::warn!(error = %e, log_tail = %t, "module build failed");
                }
                let mut p = fail(reason, e.to_string());
                self.last_build = Some(BuildStatus {
                    duration_seconds: round_ms(secs),
                    log_tail,
                });
                p.status.build = self.last_build.clone();
                self.build_failure = Some((key.clone(), Instant::now(), p.status.clone()));
                return Err(p);
            }
        };
        self.metrics.record_build(BuildOutcome::Success, secs);
        self.build_failure = None;
        self.last_build = Some(BuildStatus {
            duration_seconds: round_ms(secs),
            log_tail: None,
        });
        let srcversion = built.info.srcversion.clone().unwrap_or_default();
        tracing::info!(seconds = secs, srcversion = %srcversion, "module built");
        match self.cache.store(key, &built.image) {
            Ok(entry) => Ok((entry.path, srcversion, ModuleSource::Built)),
            Err(e) => {
                // A broken cache must not keep the node without TOA: load from the work dir.
                tracing::warn!(error = %e, "cannot cache the built module; loading it uncached");
                let fallback = self.cfg.cache_dir.join("work").join("toa-uncached.ko");
                std::fs::create_dir_all(self.cfg.cache_dir.join("work"))
                    .and_then(|_| std::fs::write(&fallback, &built.image))
                    .map_err(|e2| {
                        fail(
                            Reason::LoadFailed,
                            format!("cannot store the built module anywhere: {e}; {e2}"),
                        )
                    })?;
                Ok((fallback, srcversion, ModuleSource::Built))
            }
        }
    }

    /// Where to build: the image against the host's headers when it can, else a build root
    /// from the node's distribution (see [`buildroot`]). Returns the build tree (a host path,
    /// or a path inside the root) and the root.
    #[allow(clippy::result_large_err)]
    fn toolchain(
        &mut self,
        key: &CacheKey,
        facts: &KernelFacts,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<(PathBuf, Option<buildroot::Root>)> {
        let release = &facts.release;
        let found = headers::discover(self.host.as_ref(), release, &facts.os);
        let kdir = match &found {
            Headers::Found(dir) => Some(dir.clone()),
            Headers::Missing { .. } => None,
        };
        let kc = buildroot::kernel_compiler(self.host.as_ref(), kdir.as_deref(), release);
        // Why the image cannot build here, as the status it would be without a build root.
        let cannot = match (&found, &kc) {
            (Headers::Missing { searched, package }, _) => Some((
                Reason::HeadersMissing,
                headers::missing_message(release, searched, package),
                format!("the node has no headers for {release}"),
            )),
            (Headers::Found(dir), kc) => {
                // The kernel's compiler must be in the agent's image, or make fails deep in
                // its log.
                let mismatch = kc.as_ref().and_then(|kc| {
                    compiler::mismatch(self.host.as_ref(), release, kc).map(|m| (kc, m))
                });
                if let Some((kc, m)) = mismatch {
                    tracing::warn!(kernel_compiler = %kc.text, "the agent image lacks the kernel's compiler");
                    Some((
                        Reason::CompilerMismatch,
                        m,
                        format!("the agent image has no {}", kc.versioned_name()),
                    ))
                } else {
                    let tree = self.host.build_tree(dir).unwrap_or_else(|_| dir.clone());
                    buildroot::helpers_unusable(self.host.as_ref(), &tree).map(|m| {
                        (
                            Reason::BuildFailed,
                            format!("{m}; a build root from the node's distribution is needed (--build-root)"),
                            "the kernel's kbuild helpers do not run in the agent image".to_string(),
                        )
                    })
                }
            }
        };
        let Some((reason, message, why)) = cannot else {
            return Ok((kdir.unwrap_or_default(), None));
        };
        if !self.cfg.build_root {
            return Err(fail(reason, message));
        }
        let Some(family) = buildroot::family_for(&facts.os) else {
            return Err(fail(
                reason,
                format!(
                    "{message} (no build root either: the agent assembles one only on Debian-family nodes, and {} is not)",
                    if facts.os.pretty_name.is_empty() { "this node" } else { &facts.os.pretty_name }
                ),
            ));
        };
        let mirror = self.cfg.build_root_mirror.as_deref();
        let plan = family
            .plan(self.host.as_ref(), &facts.os, release, kc.as_ref(), mirror)
            .map_err(|e| self.build_root_failure(key, e, &why))?;
        progress(&self.status_with(
            Phase::Building,
            format!(
                "{why}: assembling a build root from the node's distribution ({} {}, {} from {})",
                family.name(),
                plan.key.suite,
                plan.packages.join(", "),
                plan.mirror_list()
            ),
        ));
        let started = Instant::now();
        let root = buildroot::ensure(
            self.host.as_ref(),
            family.as_ref(),
            &plan,
            &self.cfg.cache_dir,
            self.cfg.build_timeout.saturating_mul(3),
        )
        .map_err(|e| self.build_root_failure(key, e, &why))?;
        tracing::info!(
            root = %root.dir.display(),
            fetched = root.fetched,
            seconds = started.elapsed().as_secs_f64(),
            "build root ready ({why})"
        );
        Ok((root.kdir.clone(), Some(root)))
    }

    /// The status of a failed build root. An unreachable mirror is retried at the next pass;
    /// other failures, like a failed build, not before [`BUILD_RETRY`].
    fn build_root_failure(
        &mut self,
        key: &CacheKey,
        e: buildroot::BuildRootError,
        why: &str,
    ) -> Pass {
        tracing::warn!(error = %e, "no build root from the node's distribution");
        match e {
            buildroot::BuildRootError::MirrorUnreachable { .. } => fail(
                Reason::MirrorUnreachable,
                format!("{why} and a build root cannot be fetched: {e}"),
            ),
            buildroot::BuildRootError::Failed(_) => {
                let p = fail(
                    Reason::BuildRootFailed,
                    format!("{why} and assembling a build root from the node's distribution failed: {e}"),
                );
                self.build_failure = Some((key.clone(), Instant::now(), p.status.clone()));
                p
            }
        }
    }

    fn load_image(
        &mut self,
        desired: &Desired,
        facts: &KernelFacts,
        image: &std::path::Path,
        srcversion: &str,
        source: ModuleSource,
    ) -> Pass {
        let args = params::load_args(&desired.spec.module);
        let started = Instant::now();
        if let Err(e) = module::load(self.host.as_ref(), image, &args) {
            self.metrics
                .record_load(false, source, Some(started.elapsed().as_secs_f64()));
            let r = module::explain_load(&e, facts.locked_down(), facts.secure_boot);
            tracing::warn!(errno = e.errno.0, reason = r.reason.as_str(), message = %r.message, kernel_log = ?e.kernel_log, "finit_module refused");
            return fail(r.reason, r.message);
        }
        let seconds = started.elapsed().as_secs_f64();
        // Verify that the kernel now runs exactly the module we built.
        let now = module::loaded(self.host.as_ref());
        let got = now.as_ref().and_then(|l| l.srcversion.clone());
        if got.as_deref() != Some(srcversion) {
            self.metrics.record_load(false, source, Some(seconds));
            return fail(
                Reason::LoadFailed,
                format!(
                    "finit_module succeeded but /sys/module/toa/srcversion is {:?}, expected {srcversion:?}",
                    got
                ),
            );
        }
        self.metrics.record_load(true, source, Some(seconds));
        tracing::info!(
            source = crate::status::source_name(source),
            seconds,
            srcversion,
            "toa module loaded"
        );
        self.current = Some((srcversion.to_string(), source));
        self.keep_loaded(desired, srcversion, false)
    }

    /// An older build of ours is loaded: keep it serving and ask for a reload.
    fn keep_older(&mut self, desired: &Desired, srcversion: &str) -> Pass {
        let mut pass = self.keep_loaded(desired, srcversion, true);
        if pass.status.phase == Phase::Loaded {
            pass.status.message = Some(format!(
                "the loaded module (srcversion {srcversion}) is an older build of this agent; reload pending until the operator allows it"
            ));
        }
        pass
    }

    /// The module is ours and loaded: bring parameters in line and report Loaded.
    fn keep_loaded(&mut self, desired: &Desired, srcversion: &str, reload_pending: bool) -> Pass {
        let source = match &self.current {
            Some((sv, src)) if sv == srcversion => *src,
            _ => {
                tracing::info!(srcversion, "adopting the loaded toa module (no reload)");
                self.metrics.record_load(true, ModuleSource::Adopted, None);
                self.current = Some((srcversion.to_string(), ModuleSource::Adopted));
                ModuleSource::Adopted
            }
        };
        let mut status = NodeStatus {
            phase: Phase::Loaded,
            reload_pending,
            ..Default::default()
        };
        let mut params_changed = false;
        match params::apply(self.host.as_ref(), &desired.spec.module) {
            Ok(changed) if !changed.is_empty() => {
                // New kinds, sources or ports change what the self-test must send.
                params_changed = true;
                tracing::info!(?changed, "module parameters changed at runtime (no reload)");
                status.message = Some(format!(
                    "parameters changed without reload: {}",
                    changed.join(", ")
                ));
            }
            Ok(_) => {}
            Err(e @ params::ParamError::Missing { .. }) => {
                status.phase = Phase::Failed;
                status.reason = Some(Reason::ParametersRejected);
                status.message = Some(e.to_string());
                status.reload_pending = true;
            }
            Err(e) => {
                status.phase = Phase::Failed;
                status.reason = Some(Reason::ParametersRejected);
                status.message = Some(e.to_string());
            }
        }
        if status.phase == Phase::Loaded {
            let info = self.self_test_for(srcversion, params_changed);
            if info.result == SelfTestResult::Failed {
                status.phase = Phase::Failed;
                status.reason = Some(Reason::SelfTestFailed);
                status.message = Some(format!(
                    "the module is loaded but TOA does not work on this node: the agent's self-test {}",
                    info.message
                ));
            }
            status.self_test = Some(info);
        }
        status.module = Some(ModuleStatus {
            srcversion: srcversion.to_string(),
            parameters: params::read_loaded(self.host.as_ref()),
            source,
        });
        let requeue = if status.phase == Phase::Loaded {
            RESYNC
        } else {
            FAILURE_RETRY
        };
        Pass { status, requeue }
    }
}

// ---- eBPF backend ----------------------------------------------------------------------

/// `status.selfTest.srcversion` of a self-test of the eBPF backend (it has no srcversion).
pub const EBPF_SELF_TEST_KEY: &str = "ebpf";

impl Reconciler {
    /// The backend to serve the node with, and for Auto why this one. Module and EBPF are
    /// taken as asked. Auto picks Module when the module settings do not fit the eBPF backend
    /// (checked on every pass: the settings change), else keeps its pick for this process:
    /// EBPF when the eBPF backend is attached already (adopted after a restart) or the node
    /// passes the probe (BPF file system, cgroup v2 root, programs verified), Module otherwise.
    fn pick_backend(&mut self, desired: &Desired) -> (Backend, Option<String>) {
        if let Some(b) = desired.spec.backend.fixed() {
            return (b, None);
        }
        if let Err(e) = crate::ebpf::params(&desired.spec.module) {
            // Not kept: once the settings fit, the node's own abilities decide.
            return (Backend::Module, Some(format!("Auto picked Module: {e}")));
        }
        if let Some((b, why)) = self.auto_pick.as_ref() {
            return (*b, Some(why.clone()));
        }
        let pick = if self.host.ebpf_attached() {
            (
                Backend::Ebpf,
                "Auto picked EBPF: the eBPF backend is attached on this node".to_string(),
            )
        } else {
            match self.host.ebpf_probe() {
                Ok(()) => (
                    Backend::Ebpf,
                    "Auto picked EBPF: this node runs it (BPF file system, cgroup v2 root, programs accepted by the kernel's verifier)".to_string(),
                ),
                Err(e) => (
                    Backend::Module,
                    format!("Auto picked Module: this node cannot run the eBPF backend: {e}"),
                ),
            }
        };
        tracing::info!(backend = %pick.0, reason = %pick.1, "backend Auto resolved");
        self.auto_pick = Some(pick.clone());
        (pick.0, Some(pick.1))
    }

    /// The backend picked for `desired` without probing again (Auto: the kept pick, Module
    /// when the settings do not fit the eBPF backend).
    fn resolved_backend(&self, desired: &Desired) -> Backend {
        match desired.spec.backend.fixed() {
            Some(b) => b,
            None if crate::ebpf::params(&desired.spec.module).is_err() => Backend::Module,
            None => self.auto_pick.as_ref().map_or(Backend::Module, |(b, _)| *b),
        }
    }

    /// Desired Loaded with the module: leave the eBPF backend first (with a grant), then load.
    #[allow(clippy::result_large_err)]
    fn module_pass(
        &mut self,
        desired: &Desired,
        facts: &KernelFacts,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<Pass> {
        match self.leave_ebpf(desired, progress) {
            Ok(()) => self.load_pass(desired, facts, progress),
            Err(p) => Err(p),
        }
    }

    /// Desired Unloaded (either backend): detaches the eBPF backend when it is attached.
    /// Returns whether it was.
    #[allow(clippy::result_large_err)]
    fn detach_ebpf(&mut self, progress: &mut dyn FnMut(&NodeStatus)) -> Step<bool> {
        if !self.host.ebpf_attached() {
            self.ebpf_params = None;
            return Ok(false);
        }
        progress(&self.status_with(Phase::Unloading, "detaching the eBPF backend"));
        match self.host.ebpf_detach() {
            Ok(_) => {
                tracing::info!("eBPF backend detached");
                self.ebpf_params = None;
                Ok(true)
            }
            Err(e) => Err(fail(
                Reason::UnloadFailed,
                format!("cannot detach the eBPF backend: {e}"),
            )),
        }
    }

    /// Desired backend Module while the eBPF backend is attached: switching is a disruptive
    /// change like a reload, so it detaches only with the operator's grant (reloadAllowed);
    /// until then the eBPF backend keeps serving and the node asks with reloadPending.
    #[allow(clippy::result_large_err)]
    fn leave_ebpf(&mut self, desired: &Desired, progress: &mut dyn FnMut(&NodeStatus)) -> Step<()> {
        if !self.host.ebpf_attached() {
            return Ok(());
        }
        if !desired.spec.reload_allowed {
            let mut status = self.status_with(
                Phase::Loaded,
                "the eBPF backend serves; switching to backend Module is pending until the operator allows it (a paced, disruptive change like a reload)",
            );
            status.reload_pending = true;
            return Err(Pass {
                status,
                requeue: RESYNC,
            });
        }
        self.detach_ebpf(progress).map(|_| ())
    }

    /// Desired Loaded with backend EBPF: attach (or adopt the pinned backend) and write the
    /// parameters. A toa module still loaded is unloaded first, with the operator's grant.
    #[allow(clippy::result_large_err)]
    fn ebpf_pass(
        &mut self,
        desired: &Desired,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<Pass> {
        let params = crate::ebpf::params(&desired.spec.module)
            .map_err(|e| fail(Reason::ParametersRejected, e.to_string()))?;
        if let Some(l) = module::loaded(self.host.as_ref()) {
            self.leave_module(desired, &l, progress)?;
        }
        let was_ours = self.ebpf_params.is_some();
        let attached_before = self.host.ebpf_attached();
        if !attached_before {
            progress(&self.status_with(Phase::Loading, "attaching the eBPF backend"));
        }
        let started = Instant::now();
        let outcome = match self.host.ebpf_attach(&params) {
            Ok(o) => o,
            Err(e) => {
                let seconds = started.elapsed().as_secs_f64();
                self.metrics.record_ebpf_attach(None, seconds);
                tracing::warn!(error = %e, "the eBPF backend could not be attached");
                return Err(fail(
                    Reason::LoadFailed,
                    format!("the eBPF backend could not be attached: {e}"),
                ));
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let ms = (seconds * 1000.0).round();
        let described = crate::ebpf::describe(&params);
        let message = match outcome {
            toa_ebpf::Outcome::Loaded => format!("eBPF backend attached in {ms} ms ({described})"),
            toa_ebpf::Outcome::Repaired => format!(
                "eBPF backend repaired: some pins were missing, attached again in {ms} ms, per-socket entries kept ({described})"
            ),
            toa_ebpf::Outcome::Adopted if !was_ours => {
                format!("eBPF backend adopted from its pins, no reload ({described})")
            }
            toa_ebpf::Outcome::Adopted if self.ebpf_params.as_ref() != Some(&params) => {
                format!("eBPF backend parameters changed without reload ({described})")
            }
            toa_ebpf::Outcome::Adopted => format!("eBPF backend attached ({described})"),
        };
        if outcome != toa_ebpf::Outcome::Adopted || !was_ours {
            self.metrics.record_ebpf_attach(Some(outcome), seconds);
            tracing::info!(outcome = ?outcome, seconds, "eBPF backend serving");
        } else if self.ebpf_params.as_ref() != Some(&params) {
            tracing::info!(parameters = %described, "eBPF backend parameters changed at runtime (no reload)");
        }
        let params_changed = self.ebpf_params.as_ref() != Some(&params);
        let info = self.self_test_with(
            EBPF_SELF_TEST_KEY,
            params_changed,
            &crate::ebpf::self_test_params(&params),
        );
        self.ebpf_params = Some(params);
        let mut status = self.status_with(Phase::Loaded, message);
        let mut requeue = RESYNC;
        if info.result == SelfTestResult::Failed {
            status.phase = Phase::Failed;
            status.reason = Some(Reason::SelfTestFailed);
            status.message = Some(format!(
                "the eBPF backend is attached but TOA does not work on this node: the agent's self-test {}",
                info.message
            ));
            requeue = FAILURE_RETRY;
        }
        status.self_test = Some(info);
        Ok(Pass { status, requeue })
    }

    /// Desired backend EBPF while a toa module is loaded: ours is unloaded with the operator's
    /// grant (a disruptive switch, paced like a reload), and keeps serving until then; a foreign
    /// one only with replaceForeignModule as well.
    #[allow(clippy::result_large_err)]
    fn leave_module(
        &mut self,
        desired: &Desired,
        loaded: &Loaded,
        progress: &mut dyn FnMut(&NodeStatus),
    ) -> Step<()> {
        let ours = self.is_ours(loaded);
        if !ours && !desired.spec.replace_foreign_module {
            return Err(fail(
                Reason::ForeignModule,
                format!(
                    "a toa module not built by this agent is loaded (srcversion {}, {}); the eBPF backend is not attached beside it. Remove it, or set replaceForeignModule to let the agent replace it",
                    loaded.srcversion.as_deref().unwrap_or("none"),
                    self.foreign_origin()
                ),
            ));
        }
        if !desired.spec.reload_allowed {
            let mut status = self.status_with(
                Phase::Loaded,
                "the toa module serves; switching to backend EBPF is pending until the operator allows it (a paced, disruptive change like a reload)",
            );
            if !ours {
                status.phase = Phase::Pending;
                status.reason = Some(Reason::ReplacePending);
            }
            status.reload_pending = true;
            return Err(Pass {
                status,
                requeue: RESYNC,
            });
        }
        progress(&self.status_with(
            Phase::Unloading,
            "unloading the toa module to switch to backend EBPF",
        ));
        match module::unload_once(self.host.as_ref()) {
            Ok(()) => {
                tracing::info!("toa module unloaded to switch to the eBPF backend");
                self.current = None;
                self.self_test = None;
                Ok(())
            }
            Err(e) => {
                let mut p = fail(
                    if module::unload_retryable(e) {
                        Reason::ModuleBusy
                    } else {
                        Reason::UnloadFailed
                    },
                    format!(
                        "cannot unload the toa module to switch to backend EBPF: {e}; retrying"
                    ),
                );
                p.requeue = UNLOAD_BACKOFF_MAX;
                Err(p)
            }
        }
    }
}

impl Reconciler {
    /// The self-test result for the loaded module `srcversion`: the last one while it still
    /// applies (same module, same parameters, passed or skipped), else a new run.
    fn self_test_for(&mut self, srcversion: &str, params_changed: bool) -> SelfTestInfo {
        let params = selftest::module_params(self.host.as_ref());
        self.self_test_with(srcversion, params_changed, &params)
    }

    /// The self-test of whatever serves under `key` (a module srcversion, or
    /// [`EBPF_SELF_TEST_KEY`]) with the parameters `params`: the last result while it still
    /// applies, else a new run.
    fn self_test_with(
        &mut self,
        key: &str,
        params_changed: bool,
        params: &selftest::plan::ModuleParams,
    ) -> SelfTestInfo {
        let srcversion = key;
        if let Some(last) = &self.self_test {
            if last.srcversion == srcversion
                && !params_changed
                && last.result != SelfTestResult::Failed
            {
                return last.clone();
            }
        }
        let started = Instant::now();
        let outcome = selftest::run_with(self.host.as_ref(), params);
        let result = match &outcome {
            selftest::Outcome::Passed { .. } => SelfTestResult::Passed,
            selftest::Outcome::Failed { .. } => SelfTestResult::Failed,
            selftest::Outcome::Skipped { .. } => SelfTestResult::Skipped,
        };
        self.metrics.record_self_test(result);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            SelfTestResult::Failed => {
                tracing::warn!(%outcome, seconds, "TOA self-test failed")
            }
            _ => tracing::info!(%outcome, seconds, "TOA self-test"),
        }
        let info = SelfTestInfo {
            result,
            message: outcome.to_string(),
            srcversion: srcversion.to_string(),
        };
        self.self_test = Some(info.clone());
        info
    }
}

fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
