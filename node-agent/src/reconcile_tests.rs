//! Reconcile scenarios against the fake host: each test is one situation a node can be in.

use super::*;
use crate::desired::{BackendChoice, DesiredSpec, ModuleSettings};
use crate::host::fake::{FakeBootstrap, FakeBuild, FakeHost};
use crate::host::Errno;
use crate::metrics::SharedView;

struct Env {
    host: Arc<FakeHost>,
    metrics: Arc<Metrics>,
    _src: tempfile::TempDir,
    _cache: tempfile::TempDir,
    cfg: AgentConfig,
}

const SV: &str = "7F1D9C3B2E4A5F60718293A";

fn env() -> Env {
    let src = tempfile::tempdir().expect("t");
    std::fs::write(src.path().join("Makefile"), "obj-m += toa.o\n").expect("w");
    std::fs::write(src.path().join("toa_main.c"), "int x;\n").expect("w");
    let cache = tempfile::tempdir().expect("t");
    let host = Arc::new(FakeHost::debian());
    host.lock().build = Some(FakeBuild::Succeed {
        srcversion: SV.into(),
    });
    let view: SharedView = Arc::default();
    let metrics = Arc::new(Metrics::new(host.clone(), view, false));
    let cfg = AgentConfig {
        module_src: src.path().to_path_buf(),
        cache_dir: cache.path().to_path_buf(),
        build_timeout: Duration::from_secs(60),
        unload_timeout: Duration::from_secs(600),
        cache_max_age: Some(Duration::from_secs(30 * 86_400)),
        build_root: true,
        build_root_mirror: None,
    };
    Env {
        host,
        metrics,
        _src: src,
        _cache: cache,
        cfg,
    }
}

impl Env {
    fn agent(&self) -> Reconciler {
        Reconciler::new(self.host.clone(), self.cfg.clone(), self.metrics.clone())
    }
    fn makes(&self) -> usize {
        self.host.lock().runs.len()
    }
    fn loads(&self) -> usize {
        self.host.lock().loads.len()
    }
}

fn want(state: DesiredState) -> Desired {
    Desired {
        spec: DesiredSpec {
            desired_state: state,
            ..Default::default()
        },
        generation: 3,
    }
}

fn with_module(m: ModuleSettings) -> Desired {
    let mut d = want(DesiredState::Loaded);
    d.spec.module = m;
    d
}

fn run(agent: &mut Reconciler, d: &Desired) -> (Pass, Vec<Phase>) {
    let mut phases = Vec::new();
    let pass = agent.reconcile(d, &mut |s| phases.push(s.phase));
    (pass, phases)
}

#[test]
fn cold_start_builds_and_loads() {
    let e = env();
    let (pass, phases) = run(&mut e.agent(), &want(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(phases, [Phase::Building, Phase::Loading]);
    let m = s.module.as_ref().expect("module");
    assert_eq!(m.source, ModuleSource::Built);
    assert_eq!(m.srcversion, SV);
    assert_eq!(
        m.parameters.get("ipv4_kinds").map(String::as_str),
        Some("200")
    );
    assert_eq!(e.makes(), 1);
    assert_eq!(e.host.lock().loads, ["ipv4_kinds=200 nat64_kinds=253"]);
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        s.kernel.as_ref().map(|k| k.release.as_str()),
        Some("6.1.0-56-amd64")
    );
    assert_eq!(
        s.kernel.as_ref().map(|k| k.os_image.as_str()),
        Some("Debian GNU/Linux 12 (bookworm)")
    );
    assert!(s.build.is_some());
    assert_eq!(pass.requeue, RESYNC);
    let out = e.metrics.render().expect("render");
    assert!(out.contains("toa_module_builds_total{outcome=\"success\"} 1"));
    assert!(out.contains(
        "toa_module_loads_total{outcome=\"success\",source=\"Built\",backend=\"module\"} 1"
    ));
    // The next pass of the same process changes nothing.
    let mut agent = e.agent();
    let (again, phases) = run(&mut agent, &want(DesiredState::Loaded));
    assert!(phases.is_empty());
    assert_eq!(again.status.phase, Phase::Loaded);
    assert_eq!((e.makes(), e.loads()), (1, 1));
}

#[test]
fn restart_adopts_without_compiling() {
    let e = env();
    run(&mut e.agent(), &want(DesiredState::Loaded));
    // New process (new Reconciler), module still loaded.
    let (pass, phases) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert!(phases.is_empty(), "{phases:?}");
    assert_eq!(
        pass.status.module.as_ref().map(|m| m.source),
        Some(ModuleSource::Adopted)
    );
    assert_eq!(e.makes(), 1, "no compiler run on adopt");
    assert_eq!(e.loads(), 1, "no reload on adopt");
    assert_eq!(e.host.lock().unloads, 0);
    assert!(e.metrics.render().expect("render").contains(
        "toa_module_loads_total{outcome=\"success\",source=\"Adopted\",backend=\"module\"} 1"
    ));
}

#[test]
fn after_rmmod_loads_from_cache() {
    let e = env();
    run(&mut e.agent(), &want(DesiredState::Loaded));
    e.host.remove_prefix("/sys/module/toa");
    let (pass, phases) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert_eq!(phases, [Phase::Loading]);
    assert_eq!(
        pass.status.module.as_ref().map(|m| m.source),
        Some(ModuleSource::Cache)
    );
    assert_eq!((e.makes(), e.loads()), (1, 2));
}

#[test]
fn kernel_compiler_missing_from_the_image_is_compiler_mismatch() {
    // A Debian 11 kernel (gcc-10) under an image with gcc-12/13/14: the agent names the
    // kernel's compiler and the remedy instead of running make into "gcc-10: not found"
    // (with --build-root=false; see build_root_* below for the default).
    let mut e = env();
    e.cfg.build_root = false;
    e.host.put(
        "/lib/modules/6.1.0-56-amd64/build/.config",
        "CONFIG_CC_VERSION_TEXT=\"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110\"\n",
    );
    e.host.lock().programs = vec!["gcc-12".into(), "gcc-13".into(), "gcc-14".into()];
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Failed);
    assert_eq!(pass.status.reason, Some(Reason::CompilerMismatch));
    let msg = pass.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("gcc-10 (Debian 10.2.1-6) 10.2.1 20210110"),
        "{msg}"
    );
    assert!(msg.contains("it has: gcc-12, gcc-13, gcc-14"), "{msg}");
    assert!(
        msg.contains("run an agent image that provides gcc-10"),
        "{msg}"
    );
    assert_eq!(e.makes(), 0);
    // With the compiler in the image, the same kernel builds.
    let e = env();
    e.host.put(
        "/lib/modules/6.1.0-56-amd64/build/.config",
        "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n",
    );
    e.host.lock().programs = vec!["gcc-12".into()];
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert_eq!(e.makes(), 1);
}

#[test]
fn headers_missing_names_the_package() {
    // With --build-root=false; see build_root_* below for the default.
    let mut e = env();
    e.cfg.build_root = false;
    e.host.remove_prefix("/lib/modules");
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Failed);
    assert_eq!(pass.status.reason, Some(Reason::HeadersMissing));
    let msg = pass.status.message.clone().unwrap_or_default();
    assert!(msg.contains("linux-headers-6.1.0-56-amd64"), "{msg}");
    assert_eq!(e.makes(), 0);
    assert_eq!(pass.requeue, FAILURE_RETRY);
    // Cached module still loads without headers.
    let e2 = env();
    run(&mut e2.agent(), &want(DesiredState::Loaded));
    e2.host.remove_prefix("/sys/module/toa");
    e2.host.remove_prefix("/lib/modules");
    let (pass, _) = run(&mut e2.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
}

#[test]
fn unloaded_removes_the_module_with_retries() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    e.host
        .lock()
        .unload_errors
        .extend([Errno(libc::EBUSY), Errno(libc::EAGAIN)]);
    let (p1, phases) = run(&mut agent, &want(DesiredState::Unloaded));
    assert_eq!(phases, [Phase::Unloading]);
    assert_eq!(p1.status.phase, Phase::Unloading);
    assert_eq!(p1.status.reason, Some(Reason::ModuleBusy));
    assert_eq!(p1.requeue, Duration::from_secs(2));
    let (p2, _) = run(&mut agent, &want(DesiredState::Unloaded));
    assert_eq!(p2.status.phase, Phase::Unloading);
    assert_eq!(p2.requeue, Duration::from_secs(4), "backoff grows");
    let (p3, _) = run(&mut agent, &want(DesiredState::Unloaded));
    assert_eq!(p3.status.phase, Phase::Unloaded);
    assert!(p3.status.module.is_none());
    assert!(!e.host.module_loaded());
    assert_eq!(e.host.lock().unloads, 3);
}

#[test]
fn busy_past_the_timeout_is_module_busy() {
    let mut e = env();
    e.cfg.unload_timeout = Duration::ZERO;
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    e.host.lock().unload_errors.push_back(Errno(libc::EBUSY));
    let (p, _) = run(&mut agent, &want(DesiredState::Unloaded));
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::ModuleBusy));
    assert!(e.host.module_loaded());
}

#[test]
fn unload_error_other_than_busy() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    e.host.lock().unload_errors.push_back(Errno(libc::EPERM));
    let (p, _) = run(&mut agent, &want(DesiredState::Unloaded));
    assert_eq!(p.status.reason, Some(Reason::UnloadFailed));
}

#[test]
fn parameters_change_without_reload() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    let d = with_module(ModuleSettings {
        ipv4_option_kinds: vec![200, 254],
        nat64_option_kinds: vec![253],
        trusted_sources: vec!["10.0.0.0/8".into()],
        ..Default::default()
    });
    let (p, phases) = run(&mut agent, &d);
    assert!(phases.is_empty());
    assert_eq!(p.status.phase, Phase::Loaded);
    let params = &p.status.module.as_ref().expect("module").parameters;
    assert_eq!(
        params.get("ipv4_kinds").map(String::as_str),
        Some("200,254")
    );
    assert_eq!(
        params.get("trusted_sources").map(String::as_str),
        Some("10.0.0.0/8")
    );
    assert_eq!(e.loads(), 1);
    assert_eq!(e.host.lock().unloads, 0);
    assert!(p
        .status
        .message
        .unwrap_or_default()
        .contains("without reload"));
}

#[test]
fn rejected_parameter_is_reported() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    e.host
        .lock()
        .rejected_params
        .push(("trusted_sources".into(), "10.0.0.0/8".into()));
    let d = with_module(ModuleSettings {
        trusted_sources: vec!["10.0.0.0/8".into()],
        ..Default::default()
    });
    let (p, _) = run(&mut agent, &d);
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::ParametersRejected));
    assert!(e.host.module_loaded());
}

#[test]
fn foreign_module_is_left_alone() {
    let e = env();
    e.host.insert_module(Some("FOREIGN0000000000000000"), &[]);
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::ForeignModule));
    assert!(p
        .status
        .message
        .unwrap_or_default()
        .contains("FOREIGN0000000000000000"));
    assert_eq!(e.host.lock().unloads, 0);
    assert_eq!(e.makes(), 0);
    // A module without any srcversion is foreign too.
    let e2 = env();
    e2.host.insert_module(None, &[]);
    let (p, _) = run(&mut e2.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.reason, Some(Reason::ForeignModule));
    // Desired Unloaded does not remove somebody else's module either.
    let (p, _) = run(&mut e2.agent(), &want(DesiredState::Unloaded));
    assert_eq!(p.status.phase, Phase::Unloaded);
    assert_eq!(p.status.reason, Some(Reason::ForeignModule));
    assert!(e2.host.module_loaded());
}

/// The status says where a foreign module comes from: its file when depmod knows it (a
/// distribution's package), or that it was loaded from elsewhere; with its taint letters.
#[test]
fn foreign_module_status_names_its_origin() {
    let e = env();
    let release = e.host.uname().expect("uname").release;
    e.host.insert_module(Some("VENDOR00000000000000000"), &[]);
    e.host.put("/sys/module/toa/taint", "OE\n");
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    let msg = p.status.message.unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "not installed under /lib/modules/{release}: loaded from another path, taint OE"
        )),
        "{msg}"
    );
    e.host.put(
        &format!("/lib/modules/{release}/modules.dep"),
        "kernel/net/ipv4/tcp_bbr.ko.xz:\nupdates/dkms/toa.ko.xz: kernel/net/netfilter/x.ko.xz\n",
    );
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Unloaded));
    let msg = p.status.message.unwrap_or_default();
    assert_eq!(p.status.reason, Some(Reason::ForeignModule));
    assert!(
        msg.contains(&format!(
            "file /lib/modules/{release}/updates/dkms/toa.ko.xz, taint OE"
        )),
        "{msg}"
    );
}

/// A vendor TOA module under another name holds option 4096: reported before any build or
/// load, with its name, and never unloaded (even with replaceForeignModule).
#[test]
fn vendor_module_of_another_name_is_detected_before_load() {
    let e = env();
    e.host
        .lock()
        .foreign_sockopts
        .push(crate::module::TOA_SOCKOPT);
    e.host.put(
        "/proc/modules",
        "ip_vs 184320 2 - Live 0x0\nipvs_toa 16384 0 - Live 0x0 (OE)\n",
    );
    let mut d = want(DesiredState::Loaded);
    d.spec.replace_foreign_module = true;
    d.spec.reload_allowed = true;
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::ForeignModule));
    let msg = p.status.message.unwrap_or_default();
    assert!(
        msg.contains("already registered by another module (likely ipvs_toa)"),
        "{msg}"
    );
    assert!(e.host.lock().loads.is_empty());
    assert_eq!(e.host.lock().unloads, 0);
    assert_eq!(e.makes(), 0);
    // Once it is gone, the agent loads.
    e.host.lock().foreign_sockopts.clear();
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded, "{:?}", p.status.message);
}

/// A reboot into a new kernel: the agent builds and loads for the new release directly; it
/// never unloads anything (the old module went with the old kernel) and keeps the old
/// release's build in its cache, and an adoption after the reboot needs no build.
#[test]
fn reboot_into_new_kernel_builds_for_it_and_keeps_the_old_build() {
    let e = env();
    let d = want(DesiredState::Loaded);
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    assert_eq!(e.makes(), 1);
    // Reboot: a new kernel runs, nothing is loaded; a new agent process starts.
    e.host.remove_prefix("/sys/module/toa");
    e.host.set_uname(
        "6.12.57+deb12-amd64",
        "#1 SMP PREEMPT_DYNAMIC Debian 6.12.57-1 (2026-10-01)",
    );
    e.host
        .put("/lib/modules/6.12.57+deb12-amd64/build/.config", "");
    e.host
        .put("/lib/modules/6.12.57+deb12-amd64/build/Makefile", "");
    e.host.lock().build = Some(FakeBuild::Succeed {
        srcversion: "SV612000000000000000000".into(),
    });
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &d);
    assert_eq!(p.status.phase, Phase::Loaded, "{:?}", p.status.message);
    assert_eq!(
        p.status.kernel.map(|k| k.release).as_deref(),
        Some("6.12.57+deb12-amd64")
    );
    assert_eq!(e.makes(), 2, "one build for the new release");
    assert_eq!(e.host.lock().unloads, 0);
    let cache = crate::cache::Cache::new(&e.cfg.cache_dir);
    assert_eq!(cache.known_srcversions(), [SV, "SV612000000000000000000"]);
    // The agent restarts on the new kernel: adopted, no build.
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    assert_eq!(e.makes(), 2);
}

#[test]
fn foreign_module_replaced_only_with_grant() {
    let e = env();
    e.host.insert_module(Some("FOREIGN0000000000000000"), &[]);
    let mut d = want(DesiredState::Loaded);
    d.spec.replace_foreign_module = true;
    let (p, _) = run(&mut e.agent(), &d);
    // Waiting for the paced turn is Pending, not Failed (a planned migration is no outage).
    assert_eq!(p.status.phase, Phase::Pending);
    assert_eq!(p.status.reason, Some(Reason::ReplacePending));
    assert!(p.status.reload_pending);
    assert_eq!(e.host.lock().unloads, 0);
    d.spec.reload_allowed = true;
    let (p, phases) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded, "{:?}", p.status);
    assert!(!p.status.reload_pending);
    assert!(phases.contains(&Phase::Unloading));
    assert_eq!(
        p.status.module.as_ref().map(|m| m.srcversion.as_str()),
        Some(SV)
    );
    assert_eq!(e.host.lock().unloads, 1);
}

#[test]
fn older_build_waits_for_reload_grant() {
    let e = env();
    run(&mut e.agent(), &want(DesiredState::Loaded));
    // The agent is upgraded: new module source, new srcversion.
    std::fs::write(e.cfg.module_src.join("toa_main.c"), "int x; int y;\n").expect("w");
    e.host.lock().build = Some(FakeBuild::Succeed {
        srcversion: "NEW0000000000000000000".into(),
    });
    let mut d = want(DesiredState::Loaded);
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    assert!(p.status.reload_pending);
    assert_eq!(
        p.status.module.as_ref().map(|m| m.srcversion.as_str()),
        Some(SV)
    );
    assert_eq!(e.host.lock().unloads, 0);
    assert_eq!(
        e.makes(),
        2,
        "the new source was built (and cached) ahead of the reload"
    );
    d.spec.reload_allowed = true;
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    assert!(!p.status.reload_pending);
    assert_eq!(
        p.status
            .module
            .as_ref()
            .map(|m| (m.srcversion.as_str(), m.source)),
        Some(("NEW0000000000000000000", ModuleSource::Cache))
    );
    assert_eq!(e.makes(), 2);
    assert_eq!(e.host.lock().unloads, 1);
}

#[test]
fn lockdown_refusal_is_signature_required() {
    let e = env();
    e.host.put(
        "/sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    );
    e.host
        .lock()
        .load_errors
        .push_back(Errno(libc::EPERM).into());
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.reason, Some(Reason::SignatureRequired));
    assert_eq!(
        p.status.kernel.as_ref().and_then(|k| k.lockdown.as_deref()),
        Some("integrity")
    );
    assert!(e.metrics.render().expect("render").contains(
        "toa_module_loads_total{outcome=\"failure\",source=\"Built\",backend=\"module\"} 1"
    ));
}

#[test]
fn build_failure_keeps_the_log_and_is_not_retried_at_once() {
    let e = env();
    e.host.lock().build = Some(FakeBuild::Fail {
        code: 2,
        output: "toa_main.c:1:1: error: expected ';'\nmake: *** [toa_main.o] Error 1".into(),
    });
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(p.status.reason, Some(Reason::BuildFailed));
    let tail = p
        .status
        .build
        .as_ref()
        .and_then(|b| b.log_tail.clone())
        .unwrap_or_default();
    assert!(tail.contains("expected ';'"), "{tail}");
    let (p2, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(p2.status.reason, Some(Reason::BuildFailed));
    assert_eq!(
        e.makes(),
        1,
        "same source, same kernel: no immediate rebuild"
    );
}

#[test]
fn build_timeout_reason() {
    let e = env();
    e.host.lock().build = Some(FakeBuild::Hang {
        output: "CC".into(),
    });
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.reason, Some(Reason::BuildTimeout));
    assert!(e
        .metrics
        .render()
        .expect("render")
        .contains("toa_module_builds_total{outcome=\"timeout\"} 1"));
}

#[test]
fn corrupt_cache_entry_is_rebuilt() {
    let e = env();
    run(&mut e.agent(), &want(DesiredState::Loaded));
    e.host.remove_prefix("/sys/module/toa");
    let modules = e.cfg.cache_dir.join("modules");
    for entry in std::fs::read_dir(&modules).expect("ls").flatten() {
        std::fs::write(entry.path().join("toa.ko"), b"truncated").expect("w");
    }
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.phase, Phase::Loaded);
    assert_eq!(
        p.status.module.as_ref().map(|m| m.source),
        Some(ModuleSource::Built)
    );
    assert_eq!(e.makes(), 2);
}

#[test]
fn nothing_loaded_and_unloaded_desired() {
    let e = env();
    let (p, phases) = run(&mut e.agent(), &want(DesiredState::Unloaded));
    assert_eq!(p.status.phase, Phase::Unloaded);
    assert!(phases.is_empty());
    assert_eq!(e.host.lock().unloads, 0);
}

#[test]
fn bad_module_source_dir_is_explained() {
    let mut e = env();
    e.cfg.module_src = "/nonexistent/kmod".into();
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.reason, Some(Reason::BuildFailed));
    assert!(p
        .status
        .message
        .unwrap_or_default()
        .contains("--module-src"));
}

/// A policy that trusts a balancer network: the module then has something in scope for the
/// self-test (with nothing trusted the test is Skipped, see the next tests).
fn trusting() -> Desired {
    with_module(ModuleSettings {
        trusted_sources: vec!["10.0.0.0/16".into()],
        ..Default::default()
    })
}

#[test]
fn self_test_runs_after_load_and_is_reported() {
    let e = env();
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &trusting());
    assert_eq!(p.status.phase, Phase::Loaded);
    let st = p.status.self_test.expect("self test reported");
    assert_eq!(st.result, SelfTestResult::Passed);
    assert_eq!(st.srcversion, SV);
    // Planned from the loaded module's parameters (ipv4_kinds=200 by default, the trusted
    // network's first address as the balancer).
    let plans = e.host.lock().self_test_plans.clone();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].handshakes[0].kind, 200);
    assert_eq!(plans[0].balancer.to_string(), "10.0.0.1");
    // A passed test is not repeated on every resync.
    let (p, _) = run(&mut agent, &trusting());
    assert_eq!(
        p.status.self_test.map(|s| s.result),
        Some(SelfTestResult::Passed)
    );
    assert_eq!(e.host.lock().self_test_plans.len(), 1);
    assert!(e
        .metrics
        .render()
        .expect("render")
        .contains("toa_agent_self_tests_total{result=\"Passed\"} 1"));
}

#[test]
fn self_test_failure_is_a_reason_with_what_was_seen_and_is_retried() {
    let e = env();
    e.host
        .lock()
        .self_tests
        .push_back(crate::selftest::Outcome::Failed {
            seen: "kind 200: accept() returned 10.0.0.1:50000".into(),
        });
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &trusting());
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::SelfTestFailed));
    let msg = p.status.message.unwrap_or_default();
    assert!(msg.contains("accept() returned 10.0.0.1:50000"), "{msg}");
    assert_eq!(p.requeue, FAILURE_RETRY);
    // The module stays loaded (no unload, no reload) and the test is run again next pass.
    assert_eq!(e.host.lock().unloads, 0);
    let (p, _) = run(&mut agent, &trusting());
    assert_eq!(p.status.reason, Some(Reason::SelfTestFailed));
    assert_eq!(e.host.lock().self_test_plans.len(), 2);
    assert_eq!(e.loads(), 1);
}

#[test]
fn skipped_self_test_does_not_fail_the_node() {
    let e = env();
    e.host
        .lock()
        .self_tests
        .push_back(crate::selftest::Outcome::Skipped {
            why: "cannot open /dev/net/tun".into(),
        });
    let (p, _) = run(&mut e.agent(), &trusting());
    assert_eq!(p.status.phase, Phase::Loaded);
    let st = p.status.self_test.expect("reported");
    assert_eq!(st.result, SelfTestResult::Skipped);
    assert!(st.message.contains("/dev/net/tun"));
}

#[test]
fn ipv6_only_trusted_sources_self_test_the_module_over_ipv6() {
    let e = env();
    let d = with_module(ModuleSettings {
        trusted_sources: vec!["fd00:10::/64".into()],
        ..Default::default()
    });
    let (p, _) = run(&mut e.agent(), &d);
    assert_eq!(p.status.phase, Phase::Loaded, "{:?}", p.status);
    let st = p.status.self_test.expect("reported");
    assert_eq!(st.result, SelfTestResult::Passed, "{}", st.message);
    // Planned from the module's trusted_sources as sysfs prints it (was Skipped: "no IPv4
    // network in trusted_sources").
    let plans = e.host.lock().self_test_plans.clone();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].transport(), "IPv6");
    assert_eq!(plans[0].balancer.to_string(), "fd00:10::1");
    assert_eq!(plans[0].node.to_string(), "2001:db8::1");
}

#[test]
fn nothing_trusted_skips_the_self_test_with_the_reason() {
    let e = env();
    let (p, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(p.status.phase, Phase::Loaded);
    let st = p.status.self_test.expect("reported");
    assert_eq!(st.result, SelfTestResult::Skipped);
    assert!(st.message.contains("trusted_sources"), "{}", st.message);
    assert!(e.host.lock().self_test_plans.is_empty());
}

// ---- eBPF backend ---------------------------------------------------------------------

fn ebpf(state: DesiredState) -> Desired {
    let mut d = want(state);
    d.spec.backend = BackendChoice::Ebpf;
    d
}

#[test]
fn ebpf_backend_attaches_without_compiler_or_headers() {
    let e = env();
    // No headers, no build: the eBPF backend needs neither.
    e.host.remove_prefix("/lib/modules");
    e.host.lock().build = None;
    let mut agent = e.agent();
    let (pass, phases) = run(&mut agent, &ebpf(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Ebpf));
    assert_eq!(phases, [Phase::Loading]);
    let msg = s.message.as_deref().unwrap_or("");
    assert!(
        msg.starts_with("backend EBPF: eBPF backend attached in "),
        "{msg}"
    );
    assert!(msg.contains("ipv4_kinds=200 nat64_kinds=253"), "{msg}");
    assert_eq!(e.makes(), 0);
    assert_eq!(e.loads(), 0);
    assert!(s.module.is_none());
    assert_eq!(pass.requeue, RESYNC);
    assert_eq!(
        e.host.lock().ebpf_attaches,
        [toa_ebpf::Outcome::Loaded],
        "attached once"
    );
    // The next pass re-writes the parameters of the pinned backend, no new load.
    let (pass, phases) = run(&mut agent, &ebpf(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert!(phases.is_empty(), "{phases:?}");
    assert_eq!(
        pass.status.message.as_deref(),
        Some("backend EBPF: eBPF backend attached (ipv4_kinds=200 nat64_kinds=253 trusted_sources= accept_any_source=0 ports=)")
    );
    let out = e.metrics.render().expect("render");
    assert!(
        out.contains(
            "toa_module_loads_total{outcome=\"success\",source=\"Object\",backend=\"ebpf\"} 1"
        ),
        "{out}"
    );
    assert!(
        !out.contains("source=\"Adopted\",backend=\"ebpf\""),
        "{out}"
    );
}

#[test]
fn ebpf_restart_adopts_the_pins() {
    let e = env();
    e.host.lock().ebpf = Some(toa_ebpf::Params::default());
    let (pass, phases) = run(&mut e.agent(), &ebpf(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert!(phases.is_empty(), "no Loading for an adoption: {phases:?}");
    let msg = pass.status.message.unwrap_or_default();
    assert!(msg.contains("adopted from its pins, no reload"), "{msg}");
    assert_eq!(e.host.lock().ebpf_detaches, 0);
}

#[test]
fn ebpf_parameters_change_at_runtime() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &ebpf(DesiredState::Loaded));
    let mut d = ebpf(DesiredState::Loaded);
    d.spec.module.ipv4_option_kinds = vec![254];
    d.spec.module.trusted_sources = vec!["10.0.0.0/24".into()];
    let (pass, _) = run(&mut agent, &d);
    assert_eq!(pass.status.phase, Phase::Loaded);
    let msg = pass.status.message.unwrap_or_default();
    assert!(msg.contains("parameters changed without reload"), "{msg}");
    let st = e.host.lock();
    let p = st.ebpf.as_ref().expect("attached");
    assert_eq!(p.ipv4_kinds, [254]);
    assert_eq!(p.trusted_sources.len(), 1);
    assert_eq!(st.ebpf_detaches, 0);
}

#[test]
fn ebpf_takes_ipv6_trusted_sources() {
    // The eBPF backend matches IPv6 balancers against IPv6 entries, like the module.
    let e = env();
    let mut d = ebpf(DesiredState::Loaded);
    d.spec.module.trusted_sources = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    let (pass, _) = run(&mut e.agent(), &d);
    assert_eq!(pass.status.phase, Phase::Loaded, "{:?}", pass.status);
    let host = e.host.lock();
    let p = host.ebpf.as_ref().expect("attached");
    assert_eq!(p.trusted_sources.len(), 2);
    assert_eq!(p.trusted_sources[1].to_string(), "2001:db8::/32");
}

#[test]
fn ebpf_refuses_bad_trusted_sources_with_the_fix() {
    let e = env();
    let mut d = ebpf(DesiredState::Loaded);
    d.spec.module.trusted_sources = vec!["2001:db8::1/32".into()];
    let (pass, _) = run(&mut e.agent(), &d);
    assert_eq!(pass.status.phase, Phase::Failed);
    assert_eq!(pass.status.reason, Some(Reason::ParametersRejected));
    let msg = pass.status.message.unwrap_or_default();
    assert!(msg.contains("2001:db8::1/32"), "{msg}");
    assert!(msg.contains("write the network address"), "{msg}");
    assert!(e.host.lock().ebpf.is_none(), "nothing attached");
}

#[test]
fn ebpf_attach_failure_is_load_failed() {
    let e = env();
    e.host
        .lock()
        .ebpf_attach_errors
        .push_back("verifier refused toa_sockops".into());
    let (pass, _) = run(&mut e.agent(), &ebpf(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Failed);
    assert_eq!(pass.status.reason, Some(Reason::LoadFailed));
    assert_eq!(pass.status.backend, None);
    assert!(pass
        .status
        .message
        .unwrap_or_default()
        .contains("verifier refused toa_sockops"));
    assert_eq!(pass.requeue, FAILURE_RETRY);
}

#[test]
fn ebpf_unloaded_detaches() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &ebpf(DesiredState::Loaded));
    let (pass, phases) = run(&mut agent, &ebpf(DesiredState::Unloaded));
    assert_eq!(pass.status.phase, Phase::Unloaded, "{:?}", pass.status);
    assert_eq!(phases, [Phase::Unloading]);
    assert_eq!(pass.status.backend, None);
    assert_eq!(
        pass.status.message.as_deref(),
        Some("eBPF backend detached; no toa module is loaded")
    );
    assert!(e.host.lock().ebpf.is_none());
    // Unloaded with nothing attached detaches nothing.
    let (pass, _) = run(&mut agent, &ebpf(DesiredState::Unloaded));
    assert_eq!(
        pass.status.message.as_deref(),
        Some("no toa module is loaded")
    );
    assert_eq!(e.host.lock().ebpf_detaches, 1);
}

#[test]
fn unloaded_with_backend_module_also_detaches_ebpf() {
    let e = env();
    e.host.lock().ebpf = Some(toa_ebpf::Params::default());
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Unloaded));
    assert_eq!(pass.status.phase, Phase::Unloaded);
    assert!(e.host.lock().ebpf.is_none());
}

#[test]
fn switch_module_to_ebpf_waits_for_the_grant() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    assert!(e.host.module_loaded());
    let (pass, _) = run(&mut agent, &ebpf(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "the module keeps serving: {s:?}");
    assert!(s.reload_pending);
    assert_eq!(s.backend, Some(Backend::Module));
    assert!(s
        .message
        .as_deref()
        .unwrap_or("")
        .contains("switching to backend EBPF"));
    assert!(e.host.lock().ebpf.is_none());
    // Granted: unload the module, attach the eBPF backend.
    let mut d = ebpf(DesiredState::Loaded);
    d.spec.reload_allowed = true;
    let (pass, phases) = run(&mut agent, &d);
    assert_eq!(pass.status.phase, Phase::Loaded, "{:?}", pass.status);
    assert!(!pass.status.reload_pending);
    assert_eq!(pass.status.backend, Some(Backend::Ebpf));
    assert_eq!(phases, [Phase::Unloading, Phase::Loading]);
    assert!(!e.host.module_loaded());
    assert!(e.host.lock().ebpf.is_some());
}

#[test]
fn ebpf_leaves_a_foreign_module_alone() {
    let e = env();
    e.host.insert_module(Some("VENDOR"), &[]);
    let mut d = ebpf(DesiredState::Loaded);
    d.spec.reload_allowed = true;
    let (pass, _) = run(&mut e.agent(), &d);
    assert_eq!(pass.status.phase, Phase::Failed);
    assert_eq!(pass.status.reason, Some(Reason::ForeignModule));
    assert!(e.host.module_loaded());
    assert!(e.host.lock().ebpf.is_none());
}

#[test]
fn switch_ebpf_to_module_waits_for_the_grant() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &ebpf(DesiredState::Loaded));
    let (pass, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert!(pass.status.reload_pending);
    assert_eq!(pass.status.backend, Some(Backend::Ebpf));
    assert_eq!(e.makes(), 0, "nothing built before the grant");
    let mut d = want(DesiredState::Loaded);
    d.spec.reload_allowed = true;
    let (pass, phases) = run(&mut agent, &d);
    assert_eq!(pass.status.phase, Phase::Loaded, "{:?}", pass.status);
    assert_eq!(pass.status.backend, Some(Backend::Module));
    assert_eq!(phases[0], Phase::Unloading);
    assert!(e.host.lock().ebpf.is_none());
    assert!(e.host.module_loaded());
}

// ---- backend Auto ---------------------------------------------------------------------

fn auto(state: DesiredState) -> Desired {
    let mut d = want(state);
    d.spec.backend = BackendChoice::Auto;
    d
}

#[test]
fn auto_picks_ebpf_where_the_node_runs_it_and_says_why() {
    let e = env();
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Ebpf));
    let msg = s.message.as_deref().unwrap_or("");
    assert!(
        msg.starts_with("backend EBPF: eBPF backend attached"),
        "{msg}"
    );
    assert!(
        msg.contains("[Auto picked EBPF: this node runs it"),
        "{msg}"
    );
    assert_eq!(e.makes(), 0);
    assert!(!e.host.module_loaded());
    // The probe runs once per process; later passes keep the pick.
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    assert_eq!(pass.status.backend, Some(Backend::Ebpf));
    assert_eq!(e.host.lock().ebpf_probes, 1);
}

#[test]
fn auto_falls_back_to_the_module_when_the_probe_fails() {
    let e = env();
    e.host.lock().ebpf_probe_error = Some("/sys/fs/cgroup is not a cgroup v2 directory".into());
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Module));
    assert!(e.host.module_loaded());
    assert!(e.host.lock().ebpf.is_none());
    let msg = s.message.as_deref().unwrap_or("");
    assert!(msg.starts_with("backend Module: "), "{msg}");
    assert!(
        msg.contains("[Auto picked Module: this node cannot run the eBPF backend: ")
            && msg.contains("not a cgroup v2 directory"),
        "{msg}"
    );
}

#[test]
fn auto_falls_back_to_the_module_when_attaching_fails() {
    let e = env();
    e.host
        .lock()
        .ebpf_attach_errors
        .push_back("program toa_sockops: permission denied".into());
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Module));
    assert!(e.host.module_loaded());
    let msg = s.message.as_deref().unwrap_or("");
    assert!(
        msg.contains("[Auto picked Module: the eBPF backend could not be attached: ")
            && msg.contains("permission denied"),
        "{msg}"
    );
    // The fallback is kept: no second attach, no flapping between the backends.
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    assert_eq!(pass.status.backend, Some(Backend::Module));
    assert!(!pass.status.reload_pending);
    assert!(e.host.lock().ebpf_attaches.is_empty());
}

/// Settings the eBPF loader refuses (an address with bits beyond its prefix) send Auto to the
/// module without a probe, and the status says why. The module then judges them itself (the
/// real one refuses this value too: ParametersRejected, tests/vm/kmod.sh; the fake host here
/// loads anything).
#[test]
fn auto_picks_the_module_when_ebpf_refuses_the_settings() {
    let e = env();
    let mut d = auto(DesiredState::Loaded);
    d.spec.module.trusted_sources = vec!["2001:db8::1/32".into()];
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &d);
    let s = &pass.status;
    assert_eq!(s.backend, Some(Backend::Module), "{s:?}");
    let msg = s.message.as_deref().unwrap_or("");
    assert!(
        msg.contains("[Auto picked Module: the EBPF backend cannot take"),
        "{msg}"
    );
    assert!(msg.contains("2001:db8::1/32"), "{msg}");
    assert!(msg.contains("write the network address"), "{msg}");
    assert_eq!(e.host.lock().ebpf_probes, 0, "no probe needed");
    assert!(e.host.lock().ebpf_attaches.is_empty());
}

#[test]
fn auto_picks_ebpf_with_ipv6_trusted_sources() {
    // IPv6 entries no longer send Auto to the module: the eBPF backend takes them.
    let e = env();
    let mut d = auto(DesiredState::Loaded);
    d.spec.module.trusted_sources = vec!["2001:db8::/32".into()];
    let (pass, _) = run(&mut e.agent(), &d);
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Ebpf), "{s:?}");
    assert_eq!(e.host.lock().ebpf_probes, 1);
}

#[test]
fn auto_adopts_an_attached_ebpf_backend_after_a_restart() {
    let e = env();
    e.host.lock().ebpf = Some(toa_ebpf::Params::default());
    e.host.lock().ebpf_probe_error = Some("must not be asked".into());
    let (pass, _) = run(&mut e.agent(), &auto(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(s.backend, Some(Backend::Ebpf));
    assert_eq!(e.host.lock().ebpf_probes, 0);
    assert_eq!(e.host.lock().ebpf_attaches, [toa_ebpf::Outcome::Adopted]);
}

#[test]
fn auto_on_a_module_node_switches_to_ebpf_only_with_the_grant() {
    let e = env();
    let mut agent = e.agent();
    run(&mut agent, &want(DesiredState::Loaded));
    assert!(e.host.module_loaded());
    let (pass, _) = run(&mut agent, &auto(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert!(pass.status.reload_pending);
    assert_eq!(pass.status.backend, Some(Backend::Module));
    assert!(e.host.lock().ebpf.is_none());
    let mut d = auto(DesiredState::Loaded);
    d.spec.reload_allowed = true;
    let (pass, _) = run(&mut agent, &d);
    assert_eq!(
        pass.status.backend,
        Some(Backend::Ebpf),
        "{:?}",
        pass.status
    );
    assert!(!pass.status.reload_pending);
    assert!(!e.host.module_loaded());
}

// ---- self-test of the eBPF backend ---------------------------------------------------

fn ebpf_trusting() -> Desired {
    let mut d = trusting();
    d.spec.backend = BackendChoice::Ebpf;
    d
}

#[test]
fn ebpf_self_test_runs_after_attach_and_is_reported() {
    let e = env();
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &ebpf_trusting());
    assert_eq!(p.status.phase, Phase::Loaded, "{:?}", p.status);
    assert_eq!(p.status.backend, Some(Backend::Ebpf));
    let st = p.status.self_test.expect("self test reported");
    assert_eq!(st.result, SelfTestResult::Passed);
    assert_eq!(st.srcversion, EBPF_SELF_TEST_KEY);
    // Planned from the eBPF backend's parameters: the trusted network's first address.
    let plans = e.host.lock().self_test_plans.clone();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].balancer.to_string(), "10.0.0.1");
    assert_eq!(plans[0].handshakes[0].kind, 200);
    // Not repeated on a resync with the same parameters ...
    run(&mut agent, &ebpf_trusting());
    assert_eq!(e.host.lock().self_test_plans.len(), 1);
    // ... but after a parameter change (written to the map without a reload).
    let mut d = ebpf_trusting();
    d.spec.module.trusted_sources = vec!["10.7.0.0/16".into()];
    let (p, _) = run(&mut agent, &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    let plans = e.host.lock().self_test_plans.clone();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].balancer.to_string(), "10.7.0.1");
    // Only an IPv6 network trusted: the test runs over IPv6 transport (was Skipped).
    d.spec.module.trusted_sources = vec!["fd00:10::/64".into()];
    let (p, _) = run(&mut agent, &d);
    assert_eq!(p.status.phase, Phase::Loaded);
    let st = p.status.self_test.expect("self test reported");
    assert_eq!(st.result, SelfTestResult::Passed, "{}", st.message);
    let plans = e.host.lock().self_test_plans.clone();
    assert_eq!(plans.len(), 3);
    assert_eq!(plans[2].balancer.to_string(), "fd00:10::1");
    assert_eq!(plans[2].transport(), "IPv6");
}

#[test]
fn ebpf_self_test_failure_fails_the_node_and_is_retried() {
    let e = env();
    e.host
        .lock()
        .self_tests
        .push_back(crate::selftest::Outcome::Failed {
            seen: "kind 200: accept() returned 10.0.0.1:50000".into(),
        });
    let mut agent = e.agent();
    let (p, _) = run(&mut agent, &ebpf_trusting());
    assert_eq!(p.status.phase, Phase::Failed);
    assert_eq!(p.status.reason, Some(Reason::SelfTestFailed));
    let msg = p.status.message.unwrap_or_default();
    assert!(
        msg.contains("the eBPF backend is attached but TOA does not work")
            && msg.contains("accept() returned 10.0.0.1:50000"),
        "{msg}"
    );
    assert_eq!(p.requeue, FAILURE_RETRY);
    // Still attached (not detached for a failed test), and tested again next pass.
    assert!(e.host.lock().ebpf.is_some());
    run(&mut agent, &ebpf_trusting());
    assert_eq!(e.host.lock().self_test_plans.len(), 2);
}

#[test]
fn ebpf_with_nothing_trusted_skips_the_self_test() {
    let e = env();
    let (p, _) = run(&mut e.agent(), &ebpf(DesiredState::Loaded));
    assert_eq!(p.status.phase, Phase::Loaded);
    let st = p.status.self_test.expect("reported");
    assert_eq!(st.result, SelfTestResult::Skipped);
    assert!(e.host.lock().self_test_plans.is_empty());
}

// ---- Build root from the node's own distribution ---------------------------------------

const BULLSEYE_REL: &str = "5.10.0-35-amd64";

/// A Debian 11 node (5.10, gcc-10) with its apt sources and keys, without headers.
fn bullseye_env() -> Env {
    let e = env();
    e.host
        .set_uname(BULLSEYE_REL, "#1 SMP Debian 5.10.237-1 (2025-05-19)");
    e.host.remove_prefix("/lib/modules");
    e.host.put(
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\nID=debian\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\n",
    );
    e.host.put(
        "/etc/apt/sources.list",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main\n",
    );
    e.host.put(
        "/proc/version",
        "Linux version 5.10.0-35-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 20210110, GNU ld (GNU Binutils for Debian) 2.35.2) #1 SMP Debian 5.10.237-1 (2025-05-19)\n",
    );
    e.host.lock().programs = vec!["gcc-12".into(), "gcc-13".into(), "gcc-14".into()];
    e.host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    e
}

fn runs_of(e: &Env, program: &str) -> usize {
    e.host
        .lock()
        .runs
        .iter()
        .filter(|r| r.program == program)
        .count()
}

fn messages(agent: &mut Reconciler, d: &Desired) -> (Pass, Vec<(Phase, String)>) {
    let mut seen = Vec::new();
    let pass = agent.reconcile(d, &mut |s| {
        seen.push((s.phase, s.message.clone().unwrap_or_default()))
    });
    (pass, seen)
}

#[test]
fn build_root_headers_missing_goes_from_pending_to_loaded_without_a_manual_step() {
    let e = bullseye_env();
    let (pass, seen) = messages(&mut e.agent(), &want(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Loaded, "{s:?}");
    assert_eq!(
        s.module.as_ref().map(|m| m.source),
        Some(ModuleSource::Built)
    );
    let phases: Vec<Phase> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, [Phase::Building, Phase::Building, Phase::Loading]);
    let fetching = &seen[0].1;
    assert!(
        fetching.starts_with("the node has no headers for 5.10.0-35-amd64: assembling a build root from the node's distribution (debian bullseye, gcc-10, make, linux-headers-5.10.0-35-amd64 from http://deb.debian.org/debian)"),
        "{fetching}"
    );
    assert!(seen[1].1.contains("in the build root"), "{}", seen[1].1);
    // The build ran in the root, with the kernel's own compiler from the node's suite.
    let runs = e.host.lock().runs.clone();
    let progs: Vec<&str> = runs.iter().map(|r| r.program.as_str()).collect();
    assert_eq!(progs, ["mmdebstrap", "unshare"]);
    let root = e
        .cfg
        .cache_dir
        .join("buildroot/debian-bullseye-5.10.0-35-amd64-gcc10");
    assert_eq!(runs[1].args[5], root.display().to_string());
    assert_eq!(runs[1].args[6], "make");
    assert!(runs[1]
        .args
        .contains(&"/lib/modules/5.10.0-35-amd64/build".to_string()));
    assert!(runs[1]
        .args
        .iter()
        .any(|a| a.starts_with("M=/tmp/toa-build/")));
    // A new kernel module cache miss (say, a new module source) reuses the root.
    std::fs::remove_dir_all(e.cfg.cache_dir.join("modules")).expect("rm");
    e.host.remove_prefix("/sys/module/toa");
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert_eq!((runs_of(&e, "mmdebstrap"), runs_of(&e, "unshare")), (1, 2));
}

#[test]
fn build_root_for_a_compiler_the_image_lacks() {
    let e = bullseye_env();
    // Headers are installed, but built by gcc-10, which the image lacks.
    e.host.put(
        "/lib/modules/5.10.0-35-amd64/build/Makefile",
        "include /usr/src/linux-headers-5.10.0-35-common/Makefile\n",
    );
    e.host.put(
        "/lib/modules/5.10.0-35-amd64/build/.config",
        "CONFIG_CC_VERSION_TEXT=\"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110\"\n",
    );
    let (pass, seen) = messages(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded, "{:?}", pass.status);
    assert!(
        seen[0]
            .1
            .starts_with("the agent image has no gcc-10: assembling a build root"),
        "{}",
        seen[0].1
    );
    let runs = e.host.lock().runs.clone();
    assert!(runs[0]
        .args
        .contains(&"--include=gcc-10,make,linux-headers-5.10.0-35-amd64".to_string()));
    assert_eq!(runs_of(&e, "make"), 0, "never the image's make");
    // A kernel built by a compiler the image has keeps the image path, no build root.
    let e = env();
    e.host.put(
        "/lib/modules/6.1.0-56-amd64/build/.config",
        "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n",
    );
    e.host.lock().programs = vec!["gcc-12".into()];
    e.host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded);
    assert_eq!((runs_of(&e, "make"), runs_of(&e, "mmdebstrap")), (1, 0));
}

#[test]
fn build_root_mirror_unreachable_names_the_mirror_and_is_retried() {
    let mut e = bullseye_env();
    e.cfg.build_root_mirror = Some("http://10.0.2.100:8080/debian".into());
    e.host.lock().bootstrap = Some(FakeBootstrap::Fail {
        code: 1,
        output: "Err:1 http://10.0.2.100:8080/debian bullseye InRelease\n  Could not connect to 10.0.2.100:8080 (10.0.2.100). - connect (111: Connection refused)\nE: apt-get update failed\n".into(),
    });
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &want(DesiredState::Loaded));
    let s = &pass.status;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason, Some(Reason::MirrorUnreachable));
    let m = s.message.clone().unwrap_or_default();
    assert!(m.contains("http://10.0.2.100:8080/debian"), "{m}");
    assert!(m.contains("agent.buildRootMirror"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    assert!(
        m.starts_with("the node has no headers for 5.10.0-35-amd64"),
        "{m}"
    );
    assert_eq!(pass.requeue, FAILURE_RETRY);
    // Once the mirror answers, the next pass gets there (no wait for BUILD_RETRY).
    e.host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let (pass, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(pass.status.phase, Phase::Loaded, "{:?}", pass.status);
    assert_eq!(runs_of(&e, "mmdebstrap"), 2);
}

#[test]
fn build_root_failure_is_reported_and_not_retried_at_once() {
    let e = bullseye_env();
    e.host.lock().bootstrap = Some(FakeBootstrap::Fail {
        code: 100,
        output: "E: Unable to locate package linux-headers-5.10.0-35-amd64\n".into(),
    });
    let mut agent = e.agent();
    let (pass, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(pass.status.reason, Some(Reason::BuildRootFailed));
    let m = pass.status.message.clone().unwrap_or_default();
    assert!(
        m.contains("Unable to locate package linux-headers-5.10.0-35-amd64"),
        "{m}"
    );
    let (again, _) = run(&mut agent, &want(DesiredState::Loaded));
    assert_eq!(again.status.reason, Some(Reason::BuildRootFailed));
    assert_eq!(
        runs_of(&e, "mmdebstrap"),
        1,
        "not retried before BUILD_RETRY"
    );
    // A node without any apt source: the remedy is the mirror setting.
    let e = bullseye_env();
    e.host.remove_prefix("/etc/apt");
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.reason, Some(Reason::BuildRootFailed));
    let m = pass.status.message.clone().unwrap_or_default();
    assert!(
        m.contains("no apt sources") && m.contains("agent.buildRootMirror"),
        "{m}"
    );
    assert_eq!(runs_of(&e, "mmdebstrap"), 0);
}

#[test]
fn build_root_only_for_known_families_and_when_enabled() {
    let e = bullseye_env();
    e.host.put(
        "/etc/os-release",
        "PRETTY_NAME=\"Fedora Linux 40\"\nID=fedora\n",
    );
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.reason, Some(Reason::HeadersMissing));
    let m = pass.status.message.clone().unwrap_or_default();
    assert!(m.contains("kernel-devel-5.10.0-35-amd64"), "{m}");
    assert!(
        m.contains("only on Debian-family nodes, and Fedora Linux 40 is not"),
        "{m}"
    );
    let mut e = bullseye_env();
    e.cfg.build_root = false;
    let (pass, _) = run(&mut e.agent(), &want(DesiredState::Loaded));
    assert_eq!(pass.status.reason, Some(Reason::HeadersMissing));
    assert_eq!(e.host.lock().runs.len(), 0);
}
