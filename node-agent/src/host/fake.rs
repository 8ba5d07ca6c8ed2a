//! An in-memory host for unit tests: files, a module table that reacts to loads, unloads
//! and parameter writes like the kernel does, and a scripted `make`.

use super::{CommandOutcome, CommandSpec, Errno, Host, LoadRefusal, Uname};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the next `make` does.
#[derive(Debug, Clone)]
pub enum FakeBuild {
    /// Writes `toa.ko` with this srcversion into the `M=` directory, exits 0.
    Succeed { srcversion: String },
    /// Exits with `code` after printing `output`.
    Fail { code: i32, output: String },
    /// Never finishes within the timeout.
    Hang { output: String },
}

/// What the next `mmdebstrap` does.
#[derive(Debug, Clone)]
pub enum FakeBootstrap {
    /// Fills the target with the `--include`d packages' files (gcc-N, make, the headers).
    Succeed,
    /// Exits with `code` after printing `output`, leaving a partial target behind.
    Fail { code: i32, output: String },
}

#[derive(Debug, Default)]
pub struct FakeState {
    /// What `mmdebstrap` does; None: not installed.
    pub bootstrap: Option<FakeBootstrap>,
    /// What the headers' `scripts/basic/fixdep` prints and its exit code, when run.
    pub fixdep: Option<(i32, String)>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub uname: Option<Uname>,
    /// Refusals (errno and kernel log lines) returned by the next `finit_module` calls, in
    /// order; empty = success.
    pub load_errors: VecDeque<LoadRefusal>,
    /// Errors returned by the next `delete_module` calls, in order; empty = success.
    pub unload_errors: VecDeque<Errno>,
    /// Parameter values the "kernel" rejects with EINVAL, as (name, value).
    pub rejected_params: Vec<(String, String)>,
    pub build: Option<FakeBuild>,
    pub runs: Vec<CommandSpec>,
    pub loads: Vec<String>,
    pub unloads: usize,
    pub sysfs_writes: Vec<(PathBuf, String)>,
    /// What the next self-tests report (front first; the last one repeats); empty = Passed.
    pub self_tests: VecDeque<crate::selftest::Outcome>,
    /// Plans the self-test was run with.
    pub self_test_plans: Vec<crate::selftest::plan::Plan>,
    /// IPv4 socket options that a module of another name registered (the toa module's own
    /// 4096 counts only while it is loaded, see `ip_sockopt_registered`).
    pub foreign_sockopts: Vec<i32>,
    /// Programs on the agent's own PATH (`has_program`, `gcc_programs`).
    pub programs: Vec<String>,
    /// The eBPF backend: the parameters it is attached with (None = not attached).
    pub ebpf: Option<toa_ebpf::Params>,
    /// Errors (as messages) returned by the next `ebpf_attach` calls, in order; empty = success.
    pub ebpf_attach_errors: VecDeque<String>,
    /// The error (as a message) `ebpf_probe` returns; `None`: the node can run eBPF.
    pub ebpf_probe_error: Option<String>,
    /// How many times `ebpf_probe` ran.
    pub ebpf_probes: usize,
    /// Outcomes of every successful `ebpf_attach`, and the number of detaches.
    pub ebpf_attaches: Vec<toa_ebpf::Outcome>,
    pub ebpf_detaches: usize,
    /// The eBPF counters (`ebpf_counters`), by name; absent names read 0.
    pub ebpf_counters: BTreeMap<String, u64>,
}

fn fake_ebpf_error(message: &str) -> toa_ebpf::Error {
    toa_ebpf::Error::Io {
        what: "fake",
        path: PathBuf::from(toa_ebpf::PIN_DIR),
        source: io::Error::other(message.to_string()),
    }
}

#[derive(Debug, Default)]
pub struct FakeHost {
    pub state: Mutex<FakeState>,
}

const MODULE_DIR: &str = "/sys/module/toa";

impl FakeHost {
    /// A Debian 12 host running 6.1.0-56-amd64 with its headers installed.
    pub fn debian() -> Self {
        let host = Self::default();
        host.set_uname(
            "6.1.0-56-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-01-10)",
        );
        host.put(
            "/etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        host.put(
            "/proc/sys/kernel/random/boot_id",
            "0b6e3b7c-2a55-4a1f-9a8e-000000000001\n",
        );
        host.put(
            "/sys/kernel/security/lockdown",
            "[none] integrity confidentiality\n",
        );
        host.put(
            "/lib/modules/6.1.0-56-amd64/build/Makefile",
            "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n",
        );
        host
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn set_uname(&self, release: &str, version: &str) {
        self.lock().uname = Some(Uname {
            release: release.into(),
            version: version.into(),
        });
    }

    pub fn put(&self, path: &str, content: impl AsRef<[u8]>) {
        self.lock()
            .files
            .insert(PathBuf::from(path), content.as_ref().to_vec());
    }

    pub fn remove_prefix(&self, prefix: &str) {
        self.lock().files.retain(|p, _| !p.starts_with(prefix));
    }

    pub fn get(&self, path: &str) -> Option<String> {
        self.lock()
            .files
            .get(Path::new(path))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Pretends a `toa` module is loaded (ours or someone else's).
    pub fn insert_module(&self, srcversion: Option<&str>, params: &[(&str, &str)]) {
        let mut st = self.lock();
        insert_module_locked(&mut st, srcversion, params);
    }

    pub fn module_loaded(&self) -> bool {
        self.lock()
            .files
            .contains_key(Path::new("/sys/module/toa/initstate"))
    }
}

fn insert_module_locked(st: &mut FakeState, srcversion: Option<&str>, params: &[(&str, &str)]) {
    st.files.insert(
        PathBuf::from(format!("{MODULE_DIR}/initstate")),
        b"live\n".to_vec(),
    );
    st.files.insert(
        PathBuf::from(format!("{MODULE_DIR}/refcnt")),
        b"0\n".to_vec(),
    );
    if let Some(v) = srcversion {
        st.files.insert(
            PathBuf::from(format!("{MODULE_DIR}/srcversion")),
            format!("{v}\n").into_bytes(),
        );
    }
    let defaults = [
        ("ipv4_kinds", "200"),
        ("nat64_kinds", "253"),
        ("trusted_sources", ""),
        ("accept_any_source", "0"),
        ("ports", ""),
    ];
    for (k, v) in defaults {
        st.files.insert(
            PathBuf::from(format!("{MODULE_DIR}/parameters/{k}")),
            format!("{v}\n").into_bytes(),
        );
    }
    for (k, v) in params {
        st.files.insert(
            PathBuf::from(format!("{MODULE_DIR}/parameters/{k}")),
            format!("{v}\n").into_bytes(),
        );
    }
}

impl Host for FakeHost {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().files.keys().any(|p| p.starts_with(path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        let mut names: Vec<String> = st
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(path).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                path.display().to_string(),
            ));
        }
        Ok(names)
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(path.to_path_buf())
    }

    fn to_local(&self, path: &Path) -> PathBuf {
        Path::new("/fake-host-root").join(path.strip_prefix("/").unwrap_or(path))
    }

    fn build_tree(&self, kdir: &Path) -> io::Result<PathBuf> {
        Ok(kdir.to_path_buf())
    }

    fn write_sysfs(&self, path: &Path, value: &str) -> io::Result<()> {
        let mut st = self.lock();
        st.sysfs_writes
            .push((path.to_path_buf(), value.to_string()));
        if !st.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                path.display().to_string(),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The kernel's param setters see the buffer with echo's newline; compare without it.
        let value = value.trim_end_matches('\n');
        if st
            .rejected_params
            .iter()
            .any(|(k, v)| *k == name && v == value)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        st.files
            .insert(path.to_path_buf(), format!("{value}\n").into_bytes());
        Ok(())
    }

    fn uname(&self) -> io::Result<Uname> {
        self.lock()
            .uname
            .clone()
            .ok_or_else(|| io::Error::other("no uname configured"))
    }

    fn ip_sockopt_registered(&self, optname: i32) -> io::Result<bool> {
        let ours = optname == crate::module::TOA_SOCKOPT && self.module_loaded();
        Ok(ours || self.lock().foreign_sockopts.contains(&optname))
    }

    fn has_program(&self, name: &str) -> bool {
        self.lock().programs.iter().any(|p| p == name)
    }

    fn ebpf_attach(&self, params: &toa_ebpf::Params) -> Result<toa_ebpf::Outcome, toa_ebpf::Error> {
        let mut st = self.lock();
        if let Some(e) = st.ebpf_attach_errors.pop_front() {
            return Err(fake_ebpf_error(&e));
        }
        let outcome = if st.ebpf.is_some() {
            toa_ebpf::Outcome::Adopted
        } else {
            toa_ebpf::Outcome::Loaded
        };
        st.ebpf = Some(params.clone());
        st.ebpf_attaches.push(outcome);
        Ok(outcome)
    }

    fn ebpf_probe(&self) -> Result<(), toa_ebpf::Error> {
        let mut st = self.lock();
        st.ebpf_probes += 1;
        match &st.ebpf_probe_error {
            Some(e) => Err(fake_ebpf_error(e)),
            None => Ok(()),
        }
    }

    fn ebpf_attached(&self) -> bool {
        self.lock().ebpf.is_some()
    }

    fn ebpf_detach(&self) -> Result<bool, toa_ebpf::Error> {
        let mut st = self.lock();
        st.ebpf_detaches += 1;
        Ok(st.ebpf.take().is_some())
    }

    fn ebpf_counters(&self) -> Result<Vec<(&'static str, u64)>, toa_ebpf::Error> {
        let st = self.lock();
        if st.ebpf.is_none() {
            return Err(fake_ebpf_error("not attached"));
        }
        Ok(toa_ebpf::COUNTER_NAMES
            .iter()
            .map(|n| (*n, st.ebpf_counters.get(*n).copied().unwrap_or(0)))
            .collect())
    }

    fn gcc_programs(&self) -> Vec<String> {
        super::sorted_gcc_names(self.lock().programs.clone())
    }

    fn load_module(&self, image: &Path, params: &str) -> Result<(), LoadRefusal> {
        let mut st = self.lock();
        st.loads.push(params.to_string());
        if let Some(e) = st.load_errors.pop_front() {
            return Err(e);
        }
        if st
            .files
            .contains_key(Path::new("/sys/module/toa/initstate"))
        {
            return Err(Errno(libc::EEXIST).into());
        }
        let bytes = std::fs::read(image).map_err(|_| Errno(libc::ENOENT))?;
        let info = crate::modinfo::parse(&bytes).map_err(|_| Errno(libc::ENOEXEC))?;
        let parsed: Vec<(String, String)> = params
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = parsed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        insert_module_locked(&mut st, info.srcversion.as_deref(), &refs);
        Ok(())
    }

    fn run_self_test(&self, plan: &crate::selftest::plan::Plan) -> crate::selftest::Outcome {
        let mut st = self.lock();
        st.self_test_plans.push(plan.clone());
        match st.self_tests.len() {
            0 => crate::selftest::Outcome::Passed {
                checks: vec!["fake: passed".into()],
            },
            1 => st.self_tests[0].clone(),
            _ => st
                .self_tests
                .pop_front()
                .unwrap_or(crate::selftest::Outcome::Skipped {
                    why: "fake: no outcome".into(),
                }),
        }
    }

    fn unload_module(&self, _name: &str) -> Result<(), Errno> {
        let mut st = self.lock();
        st.unloads += 1;
        if let Some(e) = st.unload_errors.pop_front() {
            return Err(e);
        }
        let before = st.files.len();
        st.files.retain(|p, _| !p.starts_with(MODULE_DIR));
        if st.files.len() == before {
            return Err(Errno(libc::ENOENT));
        }
        Ok(())
    }

    fn run(&self, cmd: &CommandSpec) -> io::Result<CommandOutcome> {
        let mut st = self.lock();
        st.runs.push(cmd.clone());
        if cmd.program == "mmdebstrap" {
            return fake_bootstrap(st.bootstrap.clone(), cmd);
        }
        if cmd.program.ends_with("/fixdep") {
            return match st.fixdep.clone() {
                Some((code, output)) => Ok(CommandOutcome::Exited {
                    code: Some(code),
                    output,
                }),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "fixdep: not found")),
            };
        }
        let m_dir = cmd
            .args
            .iter()
            .find_map(|a| a.strip_prefix("M="))
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("fake make: no M= argument"))?;
        // `unshare --mount -- /bin/sh -c SCRIPT ROOT make ... M=/inside`: the directory is
        // below ROOT.
        let m_dir = match (cmd.program.as_str(), cmd.args.get(5)) {
            ("unshare", Some(root)) => {
                Path::new(root).join(m_dir.strip_prefix("/").unwrap_or(&m_dir))
            }
            _ => m_dir,
        };
        match st.build.clone() {
            Some(FakeBuild::Succeed { srcversion }) => {
                std::fs::write(m_dir.join("toa.ko"), crate::testutil::toa_ko(&srcversion))?;
                Ok(CommandOutcome::Exited {
                    code: Some(0),
                    output: "  CC [M]  toa.o\n  LD [M]  toa.ko\n".into(),
                })
            }
            Some(FakeBuild::Fail { code, output }) => Ok(CommandOutcome::Exited {
                code: Some(code),
                output,
            }),
            Some(FakeBuild::Hang { output }) => Ok(CommandOutcome::TimedOut { output }),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "make: not found")),
        }
    }
}

/// A fake `mmdebstrap [--opts] SUITE TARGET SOURCES..`: the target is the first absolute
/// path among the arguments.
fn fake_bootstrap(what: Option<FakeBootstrap>, cmd: &CommandSpec) -> io::Result<CommandOutcome> {
    let Some(what) = what else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "mmdebstrap: not found",
        ));
    };
    let target = cmd
        .args
        .iter()
        .find(|a| a.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("fake mmdebstrap: no target"))?;
    std::fs::create_dir_all(target.join("usr/bin"))?;
    match what {
        FakeBootstrap::Fail { code, output } => Ok(CommandOutcome::Exited {
            code: Some(code),
            output,
        }),
        FakeBootstrap::Succeed => {
            let include = cmd
                .args
                .iter()
                .find_map(|a| a.strip_prefix("--include="))
                .unwrap_or("");
            for pkg in include.split(',') {
                if pkg == "make" || pkg.starts_with("gcc-") {
                    std::fs::write(target.join("usr/bin").join(pkg), "")?;
                } else if let Some(rel) = pkg.strip_prefix("linux-headers-") {
                    let tree = target.join(format!("usr/src/linux-headers-{rel}"));
                    std::fs::create_dir_all(&tree)?;
                    std::fs::write(tree.join("Makefile"), "")?;
                    let build = target.join(format!("lib/modules/{rel}"));
                    std::fs::create_dir_all(&build)?;
                    std::os::unix::fs::symlink(
                        format!("/usr/src/linux-headers-{rel}"),
                        build.join("build"),
                    )?;
                }
            }
            Ok(CommandOutcome::Exited {
                code: Some(0),
                output: "I: success\n".into(),
            })
        }
    }
}
