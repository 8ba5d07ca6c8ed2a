//! Prometheus metrics. The toa counters are read from the host's toa_stats at scrape time
//! (no polling loop, no stale values); agent-side outcomes are ordinary registered metrics.

use crate::desired::DesiredState;
use crate::host::Host;
use crate::stats::{self, CORE_COUNTERS};
use crate::status::{Backend, ModuleSource, Phase, Reason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// toa_stats of the host's initial network namespace (through the host's /proc).
pub const STATS_PATH: &str = "/proc/1/net/toa_stats";

type Labels = Vec<(String, String)>;

/// What the reconcile loop last decided; read by /metrics and /readyz.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub desired: Option<DesiredState>,
    pub phase: Phase,
    pub reason: Option<Reason>,
    pub kernel_release: String,
    pub srcversion: String,
}

impl Default for AgentView {
    fn default() -> Self {
        Self {
            desired: None,
            phase: Phase::Pending,
            reason: None,
            kernel_release: String::new(),
            srcversion: String::new(),
        }
    }
}

impl AgentView {
    /// Ready when the module is as desired.
    pub fn ready(&self) -> bool {
        matches!(
            (self.desired, self.phase),
            (Some(DesiredState::Loaded), Phase::Loaded)
                | (Some(DesiredState::Unloaded), Phase::Unloaded)
        )
    }
}

pub type SharedView = Arc<RwLock<AgentView>>;

pub fn read_view(view: &SharedView) -> AgentView {
    match view.read() {
        Ok(v) => v.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

pub struct Metrics {
    pub registry: Registry,
    builds: Family<Labels, Counter>,
    build_duration: Histogram,
    loads: Family<Labels, Counter>,
    load_duration: Histogram,
    self_tests: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Outcome label values of toa_module_builds_total.
#[derive(Debug, Clone, Copy)]
pub enum BuildOutcome {
    Success,
    Failure,
    Timeout,
}

impl Metrics {
    pub fn new(host: Arc<dyn Host>, view: SharedView, per_cpu: bool) -> Self {
        let mut registry = Registry::default();
        let builds = Family::<Labels, Counter>::default();
        registry.register(
            "toa_module_builds",
            "Module builds by outcome (success, failure, timeout)",
            builds.clone(),
        );
        // Builds take seconds to minutes (TCG guests, small nodes).
        let build_duration =
            Histogram::new([1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]);
        registry.register(
            "toa_module_build_duration_seconds",
            "Duration of module builds",
            build_duration.clone(),
        );
        let loads = Family::<Labels, Counter>::default();
        registry.register(
            "toa_module_loads",
            "Module loads and adoptions by outcome (success, failure) and source (Built, Cache, Adopted)",
            loads.clone(),
        );
        let load_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "toa_module_load_duration_seconds",
            "Duration of finit_module plus verification",
            load_duration.clone(),
        );
        let self_tests = Family::<Labels, Counter>::default();
        registry.register(
            "toa_agent_self_tests",
            "TOA self-tests after a load or adoption, by result (Passed, Failed, Skipped)",
            self_tests.clone(),
        );
        registry.register_collector(Box::new(ToaCollector {
            host,
            view,
            per_cpu,
            last_error: Mutex::new(None),
        }));
        Self {
            registry,
            builds,
            build_duration,
            loads,
            load_duration,
            self_tests,
        }
    }

    pub fn record_self_test(&self, result: crate::status::SelfTestResult) {
        let r = match result {
            crate::status::SelfTestResult::Passed => "Passed",
            crate::status::SelfTestResult::Failed => "Failed",
            crate::status::SelfTestResult::Skipped => "Skipped",
        };
        self.self_tests
            .get_or_create(&vec![("result".to_string(), r.to_string())])
            .inc();
    }

    pub fn record_build(&self, outcome: BuildOutcome, seconds: f64) {
        let o = match outcome {
            BuildOutcome::Success => "success",
            BuildOutcome::Failure => "failure",
            BuildOutcome::Timeout => "timeout",
        };
        self.builds
            .get_or_create(&vec![("outcome".to_string(), o.to_string())])
            .inc();
        self.build_duration.observe(seconds);
    }

    /// An attach of the eBPF backend: `Some(outcome)` on success (source label Loaded,
    /// Adopted or Repaired), None on failure (source Object); backend label `ebpf`.
    pub fn record_ebpf_attach(&self, outcome: Option<toa_ebpf::Outcome>, seconds: f64) {
        let source = match outcome {
            Some(toa_ebpf::Outcome::Loaded) | None => "Object",
            Some(toa_ebpf::Outcome::Adopted) => "Adopted",
            Some(toa_ebpf::Outcome::Repaired) => "Repaired",
        };
        let labels = vec![
            (
                "outcome".to_string(),
                if outcome.is_some() {
                    "success"
                } else {
                    "failure"
                }
                .to_string(),
            ),
            ("source".to_string(), source.to_string()),
            ("backend".to_string(), Backend::Ebpf.label().to_string()),
        ];
        self.loads.get_or_create(&labels).inc();
        if outcome != Some(toa_ebpf::Outcome::Adopted) {
            self.load_duration.observe(seconds);
        }
    }

    pub fn record_load(&self, success: bool, source: ModuleSource, seconds: Option<f64>) {
        let labels = vec![
            (
                "outcome".to_string(),
                if success { "success" } else { "failure" }.to_string(),
            ),
            (
                "source".to_string(),
                crate::status::source_name(source).to_string(),
            ),
            ("backend".to_string(), Backend::Module.label().to_string()),
        ];
        self.loads.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.load_duration.observe(s);
        }
    }

    /// The exposition in Prometheus text format 0.0.4.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn help_for(name: &str) -> &'static str {
    match name {
        "syn_recv_sock_toa" => "Child sockets created with a stored TOA address",
        "syn_recv_sock_no_toa" => "Child sockets created without a TOA address",
        "getname_toa_ok" => "Peer getname calls answered with the real client address",
        "getname_toa_mismatch" => "Peer getname calls on NAT64 entries (address left unchanged)",
        "getname_toa_empty" => "Peer getname calls on sockets without a TOA entry",
        "ip6_address_alloc" => "NAT64 address entries allocated",
        "ip6_address_free" => "NAT64 address entries freed",
        "ip4_address_alloc" => "IPv4 address entries allocated",
        "ip4_address_free" => "IPv4 address entries freed",
        "toa_untrusted" => "TOA options ignored because their sender is not in trusted_sources",
        "toa_malformed" => "TOA options ignored because their length does not fit their kind",
        "syn_pending_stored" => "Addresses from a SYN kept until the handshake completes",
        "syn_pending_dropped" => {
            "Addresses from a SYN or handshake ACK not kept (pending quota reached or no memory)"
        }
        "ack_pending_stored" => "Addresses from a handshake ACK kept for the child socket",
        "attach_fallback" => {
            "Addresses attached at the first getpeername (child-creation probe skipped)"
        }
        "entries_reclaimed" => {
            "Entries of sockets destroyed while the destruct probe was skipped, freed later"
        }
        "getsockopt_ok" => "getsockopt(4096) calls answered with a NAT64 client address",
        "getsockopt_empty" => "getsockopt(4096) calls on sockets without a NAT64 entry",
        "toa_refused_address" => "Segments whose TOA address cannot be a real client",
        "toa_ambiguous" => "Segments with several TOA options that dup_rule refused",
        _ => "toa module counter (from /proc/net/toa_stats)",
    }
}

/// Prometheus name of a toa_stats counter: `toa_` + name, without doubling a `toa_` that the
/// name already has (`toa_untrusted` stays `toa_untrusted`, exported as `toa_untrusted_total`).
pub fn metric_name(counter: &str) -> String {
    if counter.starts_with("toa_") {
        counter.to_string()
    } else {
        format!("toa_{counter}")
    }
}

/// Reads toa_stats and module state on every scrape.
struct ToaCollector {
    host: Arc<dyn Host>,
    view: SharedView,
    per_cpu: bool,
    /// Last stats error logged, so that a broken file logs once, not once per scrape.
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ToaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToaCollector")
            .field("per_cpu", &self.per_cpu)
            .finish_non_exhaustive()
    }
}

impl ToaCollector {
    fn note_error(&self, e: Option<String>) {
        let mut last = match self.last_error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if *last != e {
            if let Some(msg) = &e {
                tracing::warn!(error = %msg, path = STATS_PATH, "cannot read every toa counter; those are omitted from /metrics");
            }
            *last = e;
        }
    }

    fn read_stats(&self) -> Option<stats::Stats> {
        match self.host.read_to_string(Path::new(STATS_PATH)) {
            Ok(text) => match stats::parse(&text) {
                // Rows that could not be read are left out (and logged once); the others are
                // exported: a toa module of another origin keeps the counters it has.
                Ok(p) if p.skipped.is_empty() => {
                    self.note_error(None);
                    Some(p.stats)
                }
                Ok(p) => {
                    let causes: Vec<String> = p.skipped.iter().map(|e| e.to_string()).collect();
                    self.note_error(Some(format!("some rows left out: {}", causes.join("; "))));
                    Some(p.stats)
                }
                Err(e) => {
                    self.note_error(Some(e.to_string()));
                    None
                }
            },
            // No module loaded: no counters, and nothing to complain about.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.note_error(None);
                None
            }
            Err(e) => {
                self.note_error(Some(e.to_string()));
                None
            }
        }
    }
}

impl ToaCollector {
    /// The module's `missed_<function>` rows (the kernel's kprobe/kretprobe `nmissed` for the
    /// probe on that function, see kmod/toa_hooks.c) as one family, `toa_probe_missed_total`,
    /// labelled `probe=<function>`: one metric with a label, so that alerts can sum and group
    /// it (one metric per function could not be aggregated by one selector). Nothing is
    /// encoded when the module prints no such row.
    fn encode_probe_misses(
        &self,
        stats: &stats::Stats,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let rows: Vec<(&str, &stats::Counter)> = stats
            .counters
            .iter()
            .filter_map(|c| probe_of_missed_row(&c.name).map(|probe| (probe, c)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut me = encoder.encode_descriptor(
            "toa_probe_missed",
            "Calls of the module's kernel probe on this function that the kernel skipped \
             (kprobe nmissed: options may be lost or entries freed late)",
            None,
            MetricType::Counter,
        )?;
        for (probe, counter) in rows {
            if self.per_cpu {
                for (cpu, v) in stats.cpus.iter().zip(&counter.per_cpu) {
                    let labels = [
                        ("backend", Backend::Module.label().to_string()),
                        ("probe", probe.to_string()),
                        ("cpu", cpu.to_string()),
                    ];
                    ConstCounter::new(*v).encode(me.encode_family(&labels)?)?;
                }
            } else {
                let labels = [("backend", Backend::Module.label()), ("probe", probe)];
                ConstCounter::new(counter.total()).encode(me.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The probed function of a `missed_<function>` row of /proc/net/toa_stats, None for others.
fn probe_of_missed_row(name: &str) -> Option<&str> {
    name.strip_prefix("missed_").filter(|f| !f.is_empty())
}

impl ToaCollector {
    /// The counters of every backend that runs now, with its `backend` label value: the
    /// module's `/proc/net/toa_stats`, the eBPF backend's `toa_stats` map (summed over CPUs;
    /// no `cpu` column).
    fn sources(&self) -> Vec<(&'static str, stats::Stats)> {
        let mut out = Vec::new();
        if let Some(s) = self.read_stats() {
            out.push((Backend::Module.label(), s));
        }
        if self.host.ebpf_attached() {
            match self.host.ebpf_counters() {
                Ok(rows) => out.push((
                    Backend::Ebpf.label(),
                    stats::Stats {
                        cpus: Vec::new(),
                        counters: rows
                            .into_iter()
                            .map(|(name, v)| stats::Counter {
                                name: name.to_string(),
                                per_cpu: vec![v],
                            })
                            .collect(),
                    },
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the eBPF backend's counters; they are omitted from /metrics")
                }
            }
        }
        out
    }
}

impl Collector for ToaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.sources();
        // Every counter a backend exports, core ones first: a module that gains a counter
        // exports it without an agent change. One family per name, one sample per backend.
        let mut names: Vec<&str> = CORE_COUNTERS.to_vec();
        for (_, st) in &sources {
            for c in &st.counters {
                let n = c.name.as_str();
                if !names.contains(&n) && probe_of_missed_row(n).is_none() {
                    names.push(n);
                }
            }
        }
        for name in names {
            let rows: Vec<(&str, &stats::Stats, &stats::Counter)> = sources
                .iter()
                .filter_map(|(b, st)| st.get(name).map(|c| (*b, st, c)))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let metric = metric_name(name);
            let mut me =
                encoder.encode_descriptor(&metric, help_for(name), None, MetricType::Counter)?;
            for (backend, st, counter) in rows {
                if self.per_cpu && !st.cpus.is_empty() {
                    for (cpu, v) in st.cpus.iter().zip(&counter.per_cpu) {
                        let labels = [("backend", backend.to_string()), ("cpu", cpu.to_string())];
                        ConstCounter::new(*v).encode(me.encode_family(&labels)?)?;
                    }
                } else {
                    let labels = [("backend", backend)];
                    ConstCounter::new(counter.total()).encode(me.encode_family(&labels)?)?;
                }
            }
        }
        if let Some((_, st)) = sources.iter().find(|(b, _)| *b == Backend::Module.label()) {
            self.encode_probe_misses(st, &mut encoder)?;
        }
        let loaded = self
            .host
            .read_to_string(Path::new("/sys/module/toa/initstate"))
            .map(|s| s.trim() == "live")
            .unwrap_or(false);
        ConstGauge::new(i64::from(loaded)).encode(encoder.encode_descriptor(
            "toa_module_loaded",
            "1 when a toa module is loaded and live",
            None,
            MetricType::Gauge,
        )?)?;
        // Only from a backend that has both rows (a module of another origin may have neither).
        let in_use: Vec<(&str, i64)> = sources
            .iter()
            .filter_map(|(b, s)| {
                let (alloc, free) = (s.total("ip6_address_alloc")?, s.total("ip6_address_free")?);
                Some((
                    *b,
                    i64::try_from(alloc.saturating_sub(free)).unwrap_or(i64::MAX),
                ))
            })
            .collect();
        if !in_use.is_empty() {
            let mut me = encoder.encode_descriptor(
                "toa_ip6_addresses_in_use",
                "NAT64 address entries currently stored (alloc - free)",
                None,
                MetricType::Gauge,
            )?;
            for (backend, v) in in_use {
                ConstGauge::new(v).encode(me.encode_family(&[("backend", backend)])?)?;
            }
        }
        let view = read_view(&self.view);
        let mut me = encoder.encode_descriptor(
            "toa_agent_phase",
            "1 for the agent's current phase (with its reason), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for phase in Phase::ALL.iter().copied() {
            let current = phase == view.phase;
            let reason = if current {
                view.reason.map(Reason::as_str).unwrap_or("")
            } else {
                ""
            };
            let labels = [("phase", phase.as_str()), ("reason", reason)];
            ConstGauge::new(i64::from(current)).encode(me.encode_family(&labels)?)?;
        }
        let labels = [
            ("kernel_release", view.kernel_release.as_str()),
            ("srcversion", view.srcversion.as_str()),
            ("agent_version", crate::AGENT_VERSION),
        ];
        let mut me = encoder.encode_descriptor(
            "toa_node_info",
            "Kernel release, loaded module srcversion and agent version (always 1)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(me.encode_family(&labels)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::stats::CORE_COUNTERS;

    fn stats_text(cpus: usize) -> String {
        let mut s: String = (0..cpus).map(|c| format!("CPU{c} ")).collect();
        s.push('\n');
        for (i, n) in CORE_COUNTERS.iter().enumerate() {
            s.push_str(&format!("{n}:"));
            for _ in 0..cpus {
                s.push_str(&format!(" {}", i + 1));
            }
            s.push('\n');
        }
        for (name, v) in [
            ("ip4_address_alloc", 9),
            ("toa_untrusted", 2),
            ("toa_malformed", 3),
        ] {
            s.push_str(&format!("{name}:"));
            for _ in 0..cpus {
                s.push_str(&format!(" {v}"));
            }
            s.push('\n');
        }
        s.push('\n');
        // A probe's miss count: the total in the first column, 0 in the others.
        s.push_str("missed_inet_getname:");
        for c in 0..cpus {
            s.push_str(if c == 0 { " 5" } else { " 0" });
        }
        s.push('\n');
        s
    }

    fn setup(per_cpu: bool) -> (Arc<FakeHost>, SharedView, Metrics) {
        let host = Arc::new(FakeHost::debian());
        let view: SharedView = Arc::default();
        let m = Metrics::new(host.clone(), view.clone(), per_cpu);
        (host, view, m)
    }

    #[test]
    fn counters_summed_at_scrape_time() {
        let (host, view, m) = setup(false);
        host.insert_module(Some("SV"), &[]);
        host.put(STATS_PATH, stats_text(4));
        {
            let mut v = view.write().expect("lock");
            v.phase = Phase::Loaded;
            v.kernel_release = "6.1.0-56-amd64".into();
            v.srcversion = "SV".into();
        }
        let out = m.render().expect("render");
        assert!(
            out.contains("\ntoa_syn_recv_sock_toa_total{backend=\"module\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_ip6_address_free_total{backend=\"module\"} 28\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE toa_getname_toa_ok_total counter"),
            "{out}"
        );
        assert!(out.contains("\ntoa_module_loaded 1\n"));
        // alloc (6*4=24) - free (7*4=28) saturates at 0.
        assert!(out.contains("\ntoa_ip6_addresses_in_use{backend=\"module\"} 0\n"));
        assert!(out.contains("toa_agent_phase{phase=\"Loaded\",reason=\"\"} 1"));
        assert!(out.contains("toa_agent_phase{phase=\"Failed\",reason=\"\"} 0"));
        assert!(out.contains(
            "toa_node_info{kernel_release=\"6.1.0-56-amd64\",srcversion=\"SV\",agent_version=\""
        ));
        // Every row of the file is exported, the module's newer counters too, and a name
        // that already starts with toa_ is not prefixed twice.
        assert!(
            out.contains("\ntoa_ip4_address_alloc_total{backend=\"module\"} 36\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_untrusted_total{backend=\"module\"} 8\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_malformed_total{backend=\"module\"} 12\n"),
            "{out}"
        );
        assert!(
            out.contains("# HELP toa_untrusted_total TOA options ignored"),
            "{out}"
        );
        assert!(!out.contains("toa_toa_"), "{out}");
        assert!(
            out.contains("\ntoa_probe_missed_total{backend=\"module\",probe=\"inet_getname\"} 5\n"),
            "{out}"
        );
        assert!(!out.contains("toa_missed_"), "{out}");
        // Values follow the file, not a cache.
        host.put(STATS_PATH, stats_text(8));
        assert!(m
            .render()
            .expect("render")
            .contains("\ntoa_syn_recv_sock_toa_total{backend=\"module\"} 8\n"));
    }

    #[test]
    fn foreign_layout_exports_its_own_rows_only() {
        let (host, _view, m) = setup(false);
        host.insert_module(Some("VENDOR"), &[]);
        host.put(
            STATS_PATH,
            "CPU0 CPU1\nsyn_recv_sock_toa: 1 2\nfullnat_hits: 3 4\nbroken row\n",
        );
        let out = m.render().expect("render");
        assert!(
            out.contains("\ntoa_syn_recv_sock_toa_total{backend=\"module\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_fullnat_hits_total{backend=\"module\"} 7\n"),
            "{out}"
        );
        assert!(!out.contains("toa_getname_toa_ok_total"), "{out}");
        assert!(!out.contains("toa_ip6_addresses_in_use"), "{out}");
        assert!(out.contains("\ntoa_module_loaded 1\n"), "{out}");
    }

    #[test]
    fn per_cpu_labels_on_request() {
        let (host, _view, m) = setup(true);
        host.put(STATS_PATH, stats_text(2));
        let out = m.render().expect("render");
        assert!(
            out.contains("toa_syn_recv_sock_toa_total{backend=\"module\",cpu=\"0\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("toa_syn_recv_sock_toa_total{backend=\"module\",cpu=\"1\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn no_module_no_counters_and_garbage_is_skipped() {
        let (host, view, m) = setup(false);
        view.write().expect("lock").reason = Some(Reason::HeadersMissing);
        view.write().expect("lock").phase = Phase::Failed;
        let out = m.render().expect("render");
        assert!(!out.contains("toa_syn_recv_sock_toa_total"));
        assert!(out.contains("toa_module_loaded 0"));
        assert!(out.contains("toa_agent_phase{phase=\"Failed\",reason=\"HeadersMissing\"} 1"));
        host.put(STATS_PATH, "garbage\n");
        let out = m.render().expect("render");
        assert!(!out.contains("toa_syn_recv_sock_toa_total"));
    }

    #[test]
    fn outcomes_are_counted() {
        let (_host, _view, m) = setup(false);
        m.record_build(BuildOutcome::Success, 3.0);
        m.record_build(BuildOutcome::Failure, 1.0);
        m.record_load(true, ModuleSource::Cache, Some(0.2));
        m.record_load(true, ModuleSource::Adopted, None);
        let out = m.render().expect("render");
        assert!(
            out.contains("toa_module_builds_total{outcome=\"success\"} 1"),
            "{out}"
        );
        assert!(out.contains("toa_module_builds_total{outcome=\"failure\"} 1"));
        assert!(out.contains("toa_module_build_duration_seconds_count 2"));
        assert!(out.contains(
            "toa_module_loads_total{outcome=\"success\",source=\"Cache\",backend=\"module\"} 1"
        ));
        assert!(out.contains("toa_module_load_duration_seconds_count 1"));
    }

    #[test]
    fn ebpf_counters_carry_the_backend_label() {
        let (host, _view, m) = setup(false);
        // Not attached: no counters at all.
        let out = m.render().expect("render");
        assert!(!out.contains("toa_getname_toa_ok_total"), "{out}");
        {
            let mut st = host.lock();
            st.ebpf = Some(toa_ebpf::Params::default());
            st.ebpf_counters.insert("getname_toa_ok".into(), 7);
            st.ebpf_counters.insert("ip6_address_alloc".into(), 3);
            st.ebpf_counters.insert("ip6_address_free".into(), 1);
            st.ebpf_counters.insert("toa_untrusted".into(), 2);
        }
        let out = m.render().expect("render");
        assert!(
            out.contains("\ntoa_getname_toa_ok_total{backend=\"ebpf\"} 7\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_untrusted_total{backend=\"ebpf\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("\ntoa_ip6_addresses_in_use{backend=\"ebpf\"} 2\n"),
            "{out}"
        );
        // Every counter of the map is exported, zeros too.
        assert!(
            out.contains("\ntoa_entries_reclaimed_total{backend=\"ebpf\"} 0\n"),
            "{out}"
        );
        assert!(!out.contains("backend=\"module\""), "{out}");
        // Both backends at once (a switch in progress): one family, one sample each.
        host.put(STATS_PATH, stats_text(2));
        let out = m.render().expect("render");
        assert_eq!(
            out.matches("# TYPE toa_getname_toa_ok_total counter")
                .count(),
            1,
            "{out}"
        );
        assert!(
            out.contains("toa_getname_toa_ok_total{backend=\"module\"} 6\n"),
            "{out}"
        );
        assert!(
            out.contains("toa_getname_toa_ok_total{backend=\"ebpf\"} 7\n"),
            "{out}"
        );
        // Per-CPU mode: the module per CPU, the eBPF backend summed (no cpu column).
        let (host, _view, m) = setup(true);
        host.lock().ebpf = Some(toa_ebpf::Params::default());
        host.lock().ebpf_counters.insert("getname_toa_ok".into(), 5);
        let out = m.render().expect("render");
        assert!(
            out.contains("\ntoa_getname_toa_ok_total{backend=\"ebpf\"} 5\n"),
            "{out}"
        );
    }

    #[test]
    fn ebpf_attaches_are_counted() {
        let (_host, _view, m) = setup(false);
        m.record_ebpf_attach(Some(toa_ebpf::Outcome::Loaded), 0.8);
        m.record_ebpf_attach(Some(toa_ebpf::Outcome::Adopted), 0.01);
        m.record_ebpf_attach(None, 0.5);
        let out = m.render().expect("render");
        assert!(
            out.contains(
                "toa_module_loads_total{outcome=\"success\",source=\"Object\",backend=\"ebpf\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "toa_module_loads_total{outcome=\"success\",source=\"Adopted\",backend=\"ebpf\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "toa_module_loads_total{outcome=\"failure\",source=\"Object\",backend=\"ebpf\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("toa_module_load_duration_seconds_count 2"),
            "{out}"
        );
    }

    #[test]
    fn readiness() {
        let mut v = AgentView::default();
        assert!(!v.ready());
        v.desired = Some(DesiredState::Loaded);
        v.phase = Phase::Loaded;
        assert!(v.ready());
        v.phase = Phase::Failed;
        assert!(!v.ready());
        v.desired = Some(DesiredState::Unloaded);
        v.phase = Phase::Unloaded;
        assert!(v.ready());
    }
}
