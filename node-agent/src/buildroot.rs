//! A build root from the node's own distribution, for kernels the agent image cannot build
//! for: the node has no headers (most cloud images), the kernel was built with a compiler the
//! image lacks (a Debian 11 node's gcc-10, a sid node's gcc-16), or the headers' prebuilt
//! kbuild helpers (`fixdep`, `modpost`) do not run in the image (`GLIBC_2.xx not found`).
//!
//! The agent reads the host's `/etc/os-release` and package sources, asks the distribution
//! family ([`Family`]; [`Debian`] covers Debian and Ubuntu, an RPM family can be added beside
//! it) for a minimal root of the node's suite holding the kernel's own compiler major, `make`
//! and the headers of the running kernel, and fetches it with a well-kept bootstrapper
//! (`mmdebstrap`, which resolves with apt and verifies apt's signatures against the node's own
//! trusted keys: `/etc/apt/trusted.gpg.d`, `/etc/apt/trusted.gpg` and every source's
//! `signed-by`). The root is cached on the node under the agent's cache directory, keyed by
//! (suite, kernel release, compiler), built in a temporary directory and renamed into place
//! only once complete, and validated before every reuse. The module is then compiled inside it
//! (`chroot ROOT make ...` with a `/proc` of its own, see [`crate::build`]).

use crate::build;
use crate::compiler::{self, KernelCompiler};
use crate::headers;
use crate::host::{CommandOutcome, CommandSpec, Host};
use crate::kernel::OsRelease;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Subdirectory of the agent's cache directory holding the build roots.
pub const ROOTS_DIR: &str = "buildroot";
/// The file in a finished root recording what it was built for.
pub const STAMP: &str = ".toa-build-root.json";
/// Lines of bootstrapper output kept in a failure message.
const LOG_TAIL_LINES: usize = 20;

/// One apt source of the host (a `deb` line, or a deb822 stanza of type `deb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The keys that may sign it (`signed-by`); empty: the host's trusted keys.
    pub signed_by: Vec<SignedBy>,
    /// The file it was read from, for messages.
    pub origin: String,
}

/// A `signed-by` value: keyring files of the host, or a key inlined in a deb822 stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A host path.
    File(PathBuf),
    /// An ASCII-armored key block.
    Inline(String),
}

/// Parses one-line-style sources (`sources.list`, `*.list`): `deb [opts] URI SUITE [COMP..]`.
/// `deb-src` lines and comments are skipped; a malformed `deb` line is an error naming it.
pub fn parse_one_line(text: &str, origin: &str) -> Result<Vec<AptSource>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue; // deb-src, or not a source line
        }
        let mut rest = rest.trim_start();
        let mut signed_by = Vec::new();
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                return Err(format!(
                    "{origin}:{}: unclosed `[` in {raw:?}; fix the line (apt rejects it too)",
                    n + 1
                ));
            };
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by.extend(
                        v.split(',')
                            .filter(|p| !p.is_empty())
                            .map(|p| SignedBy::File(PathBuf::from(p))),
                    );
                }
            }
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            return Err(format!(
                "{origin}:{}: a deb line needs a URI and a suite, got {raw:?}",
                n + 1
            ));
        };
        out.push(AptSource {
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
            origin: format!("{origin}:{}", n + 1),
        });
    }
    Ok(out)
}

/// Parses deb822 sources (`*.sources`): stanzas with `Types`, `URIs`, `Suites`,
/// `Components`, `Signed-By` (paths or an inline key) and `Enabled`.
pub fn parse_deb822(text: &str, origin: &str) -> Result<Vec<AptSource>, String> {
    let mut out = Vec::new();
    for (i, stanza) in stanzas(text).into_iter().enumerate() {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            field(name)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if field("Enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no")) {
            continue;
        }
        let (uris, suites) = (words("URIs"), words("Suites"));
        if uris.is_empty() || suites.is_empty() {
            return Err(format!(
                "{origin}: stanza {} has Types: deb but no URIs or Suites; fix the file (apt rejects it too)",
                i + 1
            ));
        }
        let signed_by = match field("Signed-By") {
            None => Vec::new(),
            Some(v) if v.contains("BEGIN PGP PUBLIC KEY BLOCK") => {
                vec![SignedBy::Inline(v.to_string())]
            }
            Some(v) => v
                .split_whitespace()
                .map(|p| SignedBy::File(PathBuf::from(p)))
                .collect(),
        };
        out.push(AptSource {
            uris,
            suites,
            components: words("Components"),
            signed_by,
            origin: format!("{origin} (stanza {})", i + 1),
        });
    }
    Ok(out)
}

/// Splits deb822 text into stanzas of (field, value); continuation lines (leading space) join
/// the previous field with newlines, a lone `.` stands for an empty line (inline keys).
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                all.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                let l = line.trim();
                v.push('\n');
                v.push_str(if l == "." { "" } else { l });
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        all.push(cur);
    }
    all
}

/// Every enabled `deb` source of the host, from `/etc/apt/sources.list` and
/// `/etc/apt/sources.list.d/*.list|*.sources` (in apt's order: the file first, then the
/// directory sorted by name). An unreadable or malformed file is an error naming it.
pub fn host_sources(host: &dyn Host) -> Result<Vec<AptSource>, String> {
    let mut out = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if host.exists(main) {
        let text = host
            .read_to_string(main)
            .map_err(|e| format!("cannot read {}: {e}", main.display()))?;
        out.extend(parse_one_line(&text, "/etc/apt/sources.list")?);
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    let names = host.list_dir(dir).unwrap_or_default();
    for name in names {
        let path = dir.join(&name);
        let origin = path.display().to_string();
        let parse: fn(&str, &str) -> Result<Vec<AptSource>, String> = if name.ends_with(".list") {
            parse_one_line
        } else if name.ends_with(".sources") {
            parse_deb822
        } else {
            continue;
        };
        let text = host
            .read_to_string(&path)
            .map_err(|e| format!("cannot read {origin}: {e}"))?;
        out.extend(parse(&text, &origin)?);
    }
    Ok(out)
}

/// What a build root is cached by: the suite, the kernel release and the compiler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKey {
    /// The distribution family's name (`debian`).
    pub family: String,
    pub suite: String,
    pub release: String,
    /// The kernel's gcc major; None when the kernel names none (the headers package then
    /// brings the distribution's own).
    pub gcc_major: Option<u32>,
}

impl RootKey {
    /// The cache directory name, e.g. `debian-bullseye-5.10.0-35-amd64-gcc10`.
    pub fn dir_name(&self) -> String {
        let cc = self
            .gcc_major
            .map(|m| format!("gcc{m}"))
            .unwrap_or_else(|| "gccdefault".into());
        let raw = format!("{}-{}-{}-{cc}", self.family, self.suite, self.release);
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// What to fetch for one build root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub key: RootKey,
    /// The sources to fetch from, as one-line `deb` lines with local keyring paths.
    pub sources: Vec<String>,
    /// The mirrors named in those sources (for messages).
    pub mirrors: Vec<String>,
    /// Whether the mirrors come from the agent's --build-root-mirror (not the node's sources).
    pub mirror_overridden: bool,
    /// Inline keys of deb822 sources, written next to the root before fetching: (file, key).
    pub inline_keys: Vec<(PathBuf, String)>,
    /// Local paths of the host's trusted keyrings (file or `trusted.gpg.d` directory).
    pub keyrings: Vec<PathBuf>,
    pub packages: Vec<String>,
}

impl Plan {
    pub fn mirror_list(&self) -> String {
        self.mirrors.join(", ")
    }
}

/// Why no build root could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildRootError {
    /// The mirror did not answer (connection refused, no route, name not resolved).
    #[error("the package mirror {mirrors} is unreachable from the node ({detail}); {remedy}")]
    MirrorUnreachable {
        mirrors: String,
        detail: String,
        remedy: String,
    },
    /// Anything else: no sources, a signature not trusted, a package missing, a bootstrap
    /// failure; the message names it and the fix.
    #[error("{0}")]
    Failed(String),
}

/// The remedy of a MirrorUnreachable status.
pub fn mirror_remedy(overridden: bool) -> String {
    if overridden {
        "check the mirror named in agent.buildRootMirror (chart value; agent flag --build-root-mirror) and that nodes reach it".into()
    } else {
        "nodes without access to their distribution's mirror (air-gapped clusters) need a reachable mirror of it: set agent.buildRootMirror in the chart values (agent flag --build-root-mirror), or serve the node with the eBPF backend (ToaPolicy spec.backend: EBPF, no compiler or headers); a compiler installed on the node is never used, only the agent image's".into()
    }
}

/// A distribution family that can assemble a build root. [`Debian`] is the one there is;
/// an RPM family (dnf --installroot) would implement the same four steps.
pub trait Family: Send + Sync {
    /// Short name, the first part of the cache key (`debian`).
    fn name(&self) -> &'static str;
    /// Whether the host's distribution belongs to this family.
    fn matches(&self, os: &OsRelease) -> bool;
    /// What to fetch for the running kernel, from the host's configured sources (or the
    /// agent's mirror override).
    fn plan(
        &self,
        host: &dyn Host,
        os: &OsRelease,
        release: &str,
        compiler: Option<&KernelCompiler>,
        mirror: Option<&str>,
    ) -> Result<Plan, BuildRootError>;
    /// The command that fills the (absent or empty) directory `target` with the root.
    fn fetch_command(&self, plan: &Plan, target: &Path, timeout: Duration) -> CommandSpec;
    /// The cause of a failed fetch, from its output.
    fn explain_failure(&self, plan: &Plan, code: Option<i32>, output: &str) -> BuildRootError;
}

/// The families the agent knows, in order.
pub fn families() -> Vec<Box<dyn Family>> {
    vec![Box::new(Debian)]
}

/// The family of the host's distribution, if the agent knows it.
pub fn family_for(os: &OsRelease) -> Option<Box<dyn Family>> {
    families().into_iter().find(|f| f.matches(os))
}

/// Debian, Ubuntu and their derivatives: apt sources, `mmdebstrap` with apt's signature
/// checks, `linux-headers-$(uname -r)` and `gcc-N`.
pub struct Debian;

impl Family for Debian {
    fn name(&self) -> &'static str {
        "debian"
    }

    fn matches(&self, os: &OsRelease) -> bool {
        os.is_like("debian") || os.is_like("ubuntu")
    }

    fn plan(
        &self,
        host: &dyn Host,
        os: &OsRelease,
        release: &str,
        compiler: Option<&KernelCompiler>,
        mirror: Option<&str>,
    ) -> Result<Plan, BuildRootError> {
        let mut sources = host_sources(host).map_err(|e| {
            BuildRootError::Failed(format!(
                "cannot read the node's apt sources: {e}; fix the file on the node"
            ))
        })?;
        if sources.is_empty() {
            let Some(m) = mirror.filter(|_| !os.version_codename.is_empty()) else {
                return Err(BuildRootError::Failed(format!(
                    "the node has no apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d){}; set agent.buildRootMirror in the chart values (agent flag --build-root-mirror) to a mirror of {}, or install {} on the node",
                    if os.version_codename.is_empty() { " and its /etc/os-release has no VERSION_CODENAME" } else { "" },
                    if os.pretty_name.is_empty() { "the node's distribution" } else { &os.pretty_name },
                    headers::package_for(os, release)
                )));
            };
            sources.push(AptSource {
                uris: vec![m.to_string()],
                suites: vec![os.version_codename.clone()],
                components: vec!["main".into()],
                signed_by: Vec::new(),
                origin: "--build-root-mirror".into(),
            });
        }
        // The suite: the one named by os-release's codename, else the first source's.
        let all_suites: Vec<&String> = sources.iter().flat_map(|s| &s.suites).collect();
        let suite = all_suites
            .iter()
            .find(|s| !os.version_codename.is_empty() && **s == &os.version_codename)
            .or_else(|| all_suites.first())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut lines = Vec::new();
        let mut mirrors: Vec<String> = Vec::new();
        let mut inline_keys = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let mut keys = Vec::new();
            for k in &s.signed_by {
                match k {
                    SignedBy::File(p) => keys.push(host.to_local(p).display().to_string()),
                    SignedBy::Inline(text) => {
                        let file = PathBuf::from(format!("inline-key-{i}.asc"));
                        keys.push(file.display().to_string());
                        inline_keys.push((file, text.clone()));
                    }
                }
            }
            let opts = if keys.is_empty() {
                String::new()
            } else {
                format!("[signed-by={}] ", keys.join(","))
            };
            let uris: Vec<String> = match mirror {
                Some(m) => vec![m.to_string()],
                None => s.uris.clone(),
            };
            for uri in &uris {
                if !mirrors.contains(uri) {
                    mirrors.push(uri.clone());
                }
                for suite in &s.suites {
                    let line = format!("deb {opts}{uri} {suite} {}", s.components.join(" "));
                    let line = line.trim_end().to_string();
                    if !lines.contains(&line) {
                        lines.push(line);
                    }
                }
            }
        }
        let keyrings = ["/etc/apt/trusted.gpg.d", "/etc/apt/trusted.gpg"]
            .iter()
            .map(Path::new)
            .filter(|p| host.exists(p))
            .map(|p| host.to_local(p))
            .collect();
        let mut packages = Vec::new();
        if let Some(c) = compiler {
            packages.push(c.versioned_name());
        }
        packages.extend(["make".to_string(), format!("linux-headers-{release}")]);
        Ok(Plan {
            key: RootKey {
                family: self.name().into(),
                suite,
                release: release.to_string(),
                gcc_major: compiler.map(|c| c.major),
            },
            sources: lines,
            mirrors,
            mirror_overridden: mirror.is_some(),
            inline_keys,
            keyrings,
            packages,
        })
    }

    fn fetch_command(&self, plan: &Plan, target: &Path, timeout: Duration) -> CommandSpec {
        let mut args = vec![
            "--mode=root".to_string(),
            "--variant=minbase".to_string(),
            "--format=directory".to_string(),
            format!("--include={}", plan.packages.join(",")),
            // Fail fast on an unreachable mirror instead of apt's long default retries.
            "--aptopt=Acquire::Retries \"1\"".to_string(),
            "--aptopt=Acquire::http::Timeout \"30\"".to_string(),
        ];
        // Only the node's own trusted keys: never the image's.
        args.extend(
            plan.keyrings
                .iter()
                .map(|k| format!("--keyring={}", k.display())),
        );
        let key_dir = target.with_extension("keys");
        if plan.keyrings.is_empty() {
            // No host keyring: signed-by must carry every key. The directory of the inline
            // keys (perhaps empty) keeps mmdebstrap from trusting the image's keys.
            args.push(format!("--keyring={}", key_dir.display()));
        }
        args.push(plan.key.suite.clone());
        args.push(target.display().to_string());
        args.extend(plan.sources.iter().map(|l| {
            let mut l = l.clone();
            for (file, _) in &plan.inline_keys {
                let local = key_dir.join(file);
                l = l.replace(
                    &format!("signed-by={}", file.display()),
                    &format!("signed-by={}", local.display()),
                );
            }
            l
        }));
        CommandSpec {
            program: "mmdebstrap".into(),
            args,
            cwd: target.parent().map(Path::to_path_buf).unwrap_or_default(),
            timeout,
        }
    }

    fn explain_failure(&self, plan: &Plan, code: Option<i32>, output: &str) -> BuildRootError {
        let find = |needles: &[&str]| {
            output
                .lines()
                .find(|l| needles.iter().any(|n| l.contains(n)))
                .map(|l| l.trim().to_string())
        };
        if let Some(line) = find(&[
            "Could not connect",
            "Connection refused",
            "Could not resolve",
            "Temporary failure resolving",
            "Connection timed out",
            "No route to host",
            "Network is unreachable",
            "Unable to connect",
        ]) {
            return BuildRootError::MirrorUnreachable {
                mirrors: plan.mirror_list(),
                detail: line,
                remedy: mirror_remedy(plan.mirror_overridden),
            };
        }
        if let Some(line) = find(&[
            "NO_PUBKEY",
            "is not signed",
            "signatures couldn't be verified",
            "signatures were invalid",
            "Missing key",
            "not signed by a trusted key",
        ]) {
            return BuildRootError::Failed(format!(
                "the mirror's Release file of {} is not signed by a key the node trusts ({line}); the agent trusts only the node's own apt keys (/etc/apt/trusted.gpg.d, signed-by): add the mirror's key to the node, or name a mirror signed by the distribution's key",
                plan.mirror_list()
            ));
        }
        if let Some(line) = find(&[
            "Unable to locate package",
            "has no installation candidate",
            "Couldn't find any package",
        ]) {
            return BuildRootError::Failed(format!(
                "a package of the build root is not on {} for {} ({line}); the node's suite must carry {}: add the suite that ships the running kernel (updates, security, backports) to the node's apt sources or the mirror",
                plan.mirror_list(),
                plan.key.suite,
                plan.packages.join(", ")
            ));
        }
        BuildRootError::Failed(format!(
            "mmdebstrap failed (exit code {code:?}) assembling the build root of {} from {}; last lines:\n{}",
            plan.key.suite,
            plan.mirror_list(),
            build::tail(output, LOG_TAIL_LINES)
        ))
    }
}

/// The kernel's compiler, from the best source the node has: the headers' `.config`, the
/// installed `/boot/config-REL`, else the banner in `/proc/version`.
pub fn kernel_compiler(
    host: &dyn Host,
    kdir: Option<&Path>,
    release: &str,
) -> Option<KernelCompiler> {
    if let Some(c) = kdir.and_then(|k| compiler::of_build_tree(host, k)) {
        return Some(c);
    }
    if let Some(c) = host
        .read_to_string(Path::new(&format!("/boot/config-{release}")))
        .ok()
        .and_then(|t| compiler::parse_config(&t))
    {
        return Some(c);
    }
    host.read_to_string(Path::new("/proc/version"))
        .ok()
        .and_then(|t| parse_proc_version(&t))
}

/// The compiler banner in `/proc/version`: `Linux version REL (builder) (gcc-10 (Debian
/// 10.2.1-6) 10.2.1 20210110, GNU ld ...) #1 SMP ...`.
pub fn parse_proc_version(text: &str) -> Option<KernelCompiler> {
    let mut rest = text;
    while let Some(i) = rest.find('(') {
        rest = &rest[i + 1..];
        let first = rest.split_whitespace().next().unwrap_or("");
        if first.contains("gcc") {
            let banner = rest.split(", ").next().unwrap_or(rest);
            return compiler::from_version_text(banner);
        }
    }
    None
}

/// What a finished root records in [`STAMP`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    key: RootKey,
    packages: Vec<String>,
    sources: Vec<String>,
}

/// A usable build root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// Local path of the root directory.
    pub dir: PathBuf,
    /// The build tree of the running kernel as seen inside the root.
    pub kdir: PathBuf,
    /// Whether it was just fetched (false: reused from the cache).
    pub fetched: bool,
}

/// Checks a cached root: its stamp names this key, and the kernel's compiler, make and the
/// build tree are there. Returns the build tree inside the root.
pub fn validate(dir: &Path, key: &RootKey) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(dir.join(STAMP))
        .map_err(|e| format!("no readable {STAMP}: {e}"))?;
    let stamp: Stamp =
        serde_json::from_str(&text).map_err(|e| format!("{STAMP} does not parse: {e}"))?;
    if stamp.key != *key {
        return Err(format!("{STAMP} is for {:?}, not {key:?}", stamp.key));
    }
    let mut needed = vec![PathBuf::from("usr/bin/make")];
    if let Some(m) = key.gcc_major {
        needed.push(PathBuf::from(format!("usr/bin/gcc-{m}")));
    }
    for n in &needed {
        if std::fs::symlink_metadata(dir.join(n)).is_err() {
            return Err(format!("/{} is missing", n.display()));
        }
    }
    headers::candidates(&key.release)
        .into_iter()
        .find(|c| {
            let local = dir.join(c.strip_prefix("/").unwrap_or(c));
            // Inside the root, absolute links point into the root.
            let target = std::fs::read_link(&local)
                .ok()
                .filter(|t| t.is_absolute())
                .map(|t| dir.join(t.strip_prefix("/").unwrap_or(&t)))
                .unwrap_or(local);
            target.join("Makefile").is_file()
        })
        .ok_or_else(|| format!("no build tree of {} (Makefile) in the root", key.release))
}

/// Whether anything is mounted at or below `dir` in the agent's mount namespace (a root
/// whose bootstrap was killed may keep /proc or /sys mounted: never delete through those).
fn has_mounts_under(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    info.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|m| Path::new(m).starts_with(dir))
    })
}

/// Removes a root directory unless something is still mounted inside it.
fn remove_root(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if has_mounts_under(dir) {
        return Err(std::io::Error::other(format!(
            "{} still has mounts inside (an interrupted bootstrap); unmount them (umount -R) and remove it",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir)
}

/// Removes the build roots of other kernel releases unused for longer than `max_age` (the
/// agent's `--cache-max-age-days`, as for cached modules: [`crate::cache::Cache::prune`]);
/// marks the running release's roots as used at `now`. Roots without a readable stamp are
/// left for [`ensure`] to judge, and so are roots with mounts inside. Returns the keys removed.
pub fn prune(
    cache_dir: &Path,
    running_release: &str,
    max_age: Duration,
    now: std::time::SystemTime,
) -> Vec<RootKey> {
    let Ok(entries) = std::fs::read_dir(cache_dir.join(ROOTS_DIR)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for dir in entries.flatten().map(|e| e.path()) {
        if dir
            .file_name()
            .is_none_or(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let Some(stamp) = std::fs::read_to_string(dir.join(STAMP))
            .ok()
            .and_then(|t| serde_json::from_str::<Stamp>(&t).ok())
        else {
            continue;
        };
        if stamp.key.release == running_release {
            crate::cache::mark_used(&dir, now);
            continue;
        }
        if !crate::cache::unused_for_longer(&dir, STAMP, max_age, now) {
            continue;
        }
        match remove_root(&dir) {
            Ok(()) => removed.push(stamp.key),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an unused build root")
            }
        }
    }
    removed
}

/// Removes temporary roots left by an agent that was killed while fetching (at start-up,
/// before any fetch of this process), unless something is still mounted inside them.
pub fn clean_stale(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir.join(ROOTS_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            if let Err(err) = remove_root(&e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove a stale temporary build root");
            }
        }
    }
}

/// The cached root for `plan`, validated, or a freshly fetched one (in a temporary directory
/// renamed into place once complete and valid).
pub fn ensure(
    host: &dyn Host,
    family: &dyn Family,
    plan: &Plan,
    cache_dir: &Path,
    timeout: Duration,
) -> Result<Root, BuildRootError> {
    let roots = cache_dir.join(ROOTS_DIR);
    let dir = roots.join(plan.key.dir_name());
    let io = |what: &str, p: &Path, e: std::io::Error| {
        BuildRootError::Failed(format!(
            "cannot {what} {}: {e}; check the agent's cache directory (--cache-dir, the chart's agent.hostCachePath) is writable and has room",
            p.display()
        ))
    };
    if dir.exists() {
        match validate(&dir, &plan.key) {
            Ok(kdir) => {
                return Ok(Root {
                    dir,
                    kdir,
                    fetched: false,
                })
            }
            Err(why) => {
                tracing::warn!(root = %dir.display(), reason = %why, "cached build root failed validation; fetching it again");
                remove_root(&dir).map_err(|e| io("remove the invalid build root", &dir, e))?;
            }
        }
    }
    std::fs::create_dir_all(&roots).map_err(|e| io("create", &roots, e))?;
    let tmp = roots.join(format!(
        ".tmp-{}-{}",
        plan.key.dir_name(),
        std::process::id()
    ));
    let key_dir = tmp.with_extension("keys");
    for d in [&tmp, &key_dir] {
        remove_root(d).map_err(|e| io("clear", d, e))?;
    }
    std::fs::create_dir_all(&key_dir).map_err(|e| io("create", &key_dir, e))?;
    for (file, text) in &plan.inline_keys {
        let p = key_dir.join(file);
        std::fs::write(&p, text).map_err(|e| io("write", &p, e))?;
    }
    let cmd = family.fetch_command(plan, &tmp, timeout);
    tracing::info!(suite = %plan.key.suite, mirrors = %plan.mirror_list(), packages = %plan.packages.join(","), "fetching a build root from the node's distribution");
    let outcome = host.run(&cmd);
    let cleanup = |tmp: &Path| {
        for d in [tmp, key_dir.as_path()] {
            if let Err(e) = remove_root(d) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot remove a temporary build root");
            }
        }
    };
    let output = match outcome {
        Err(e) => {
            cleanup(&tmp);
            return Err(BuildRootError::Failed(format!(
                "cannot run mmdebstrap ({e}); the agent image must provide it (images/node-agent.packages)"
            )));
        }
        Ok(CommandOutcome::TimedOut { output }) => {
            cleanup(&tmp);
            let mut why = family.explain_failure(plan, None, &output);
            if let BuildRootError::Failed(m) = &mut why {
                *m = format!(
                    "fetching the build root did not finish within {}s (raise --build-timeout; the fetch may take three times it): {m}",
                    timeout.as_secs()
                );
            }
            return Err(why);
        }
        Ok(CommandOutcome::Exited { code, output }) if code != Some(0) => {
            cleanup(&tmp);
            return Err(family.explain_failure(plan, code, &output));
        }
        Ok(CommandOutcome::Exited { output, .. }) => output,
    };
    let stamp = Stamp {
        key: plan.key.clone(),
        packages: plan.packages.clone(),
        sources: plan.sources.clone(),
    };
    let written = serde_json::to_vec_pretty(&stamp)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(tmp.join(STAMP), b));
    if let Err(e) = written {
        cleanup(&tmp);
        return Err(io("write the stamp of", &tmp, e));
    }
    if let Err(why) = validate(&tmp, &plan.key) {
        cleanup(&tmp);
        return Err(BuildRootError::Failed(format!(
            "mmdebstrap succeeded but the build root of {} is incomplete ({why}); last lines:\n{}",
            plan.key.suite,
            build::tail(&output, LOG_TAIL_LINES)
        )));
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        cleanup(&tmp);
        return Err(io("move the finished build root to", &dir, e));
    }
    cleanup(&tmp);
    let kdir = validate(&dir, &plan.key).map_err(BuildRootError::Failed)?;
    Ok(Root {
        dir,
        kdir,
        fetched: true,
    })
}

/// Why the image cannot build for the host, when its kbuild helpers do not run in it
/// (`fixdep` linked against a newer glibc than the image's). None when they run, or when
/// the tree has none to try.
pub fn helpers_unusable(host: &dyn Host, tree: &Path) -> Option<String> {
    let fixdep = tree.join("scripts/basic/fixdep");
    if !fixdep.exists() {
        return None;
    }
    let cmd = CommandSpec {
        program: fixdep.display().to_string(),
        args: Vec::new(),
        cwd: tree.to_path_buf(),
        timeout: Duration::from_secs(10),
    };
    let bad = |output: &str| {
        [
            "GLIBC_",
            "GLIBCXX_",
            "cannot execute",
            "No such file",
            "not found",
        ]
        .iter()
        .any(|n| output.contains(n))
    };
    match host.run(&cmd) {
        Err(e) => Some(format!(
            "{} does not run in the agent image: {e}",
            fixdep.display()
        )),
        Ok(CommandOutcome::Exited { code, output })
            if matches!(code, Some(126 | 127)) || bad(&output) =>
        {
            Some(format!(
                "the kernel's kbuild helper {} does not run in the agent image: {}",
                fixdep.display(),
                build::tail(&output, 3)
            ))
        }
        Ok(_) => None,
    }
}

#[cfg(test)]
#[path = "buildroot_tests.rs"]
mod tests;
