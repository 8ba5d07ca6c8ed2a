//! Loader of the TOA eBPF backend (`ebpf/bpf/toa.bpf.c`).
//!
//! [`attach`] loads the compiled object (`toa.bpf.o`, built by `ebpf/bpf/build.sh`), writes the
//! parameters into its `toa_config` map, attaches its four programs to a cgroup v2 (the root
//! one, `/sys/fs/cgroup`, covers every pod and host process) and pins maps, programs and links
//! under a bpffs directory ([`PIN_DIR`] by default):
//!
//! ```text
//! /sys/fs/bpf/toa/toa_config  toa_stats  toa_sk            maps (pinned by name, reused)
//! /sys/fs/bpf/toa/prog_sockops  prog_getpeername4  prog_getpeername6  prog_getsockopt
//! /sys/fs/bpf/toa/link_sockops  link_getpeername4  link_getpeername6  link_getsockopt
//! ```
//!
//! The pinned links keep the programs attached after the loader exits. A later [`attach`]
//! finds them and adopts them (only the parameters are written), so an agent restart or upgrade
//! neither detaches nor loses the per-socket entries. [`detach`] removes the pins, which
//! detaches. [`read_counters`] sums the per-CPU counters, named as in `/proc/net/toa_stats`.

pub mod params;
mod sys;

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};
use aya::programs::{CgroupSockAddr, CgroupSockopt, SockOps};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfLoader};

pub use params::{ParamError, Params};

/// Where the backend pins its objects unless told otherwise.
pub const PIN_DIR: &str = "/sys/fs/bpf/toa";
/// The cgroup v2 hierarchy root where it attaches unless told otherwise.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The counters, in the order of `enum toa_counter` (ebpf/bpf/toa_ebpf.h, kmod/toa.h): index i
/// of the `toa_stats` per-CPU array is `COUNTER_NAMES[i]`, the same name as the module's line
/// in `/proc/net/toa_stats`.
pub const COUNTER_NAMES: [&str; 20] = [
    "syn_recv_sock_toa",
    "syn_recv_sock_no_toa",
    "getname_toa_ok",
    "getname_toa_mismatch",
    "getname_toa_empty",
    "ip6_address_alloc",
    "ip6_address_free",
    "ip4_address_alloc",
    "ip4_address_free",
    "toa_untrusted",
    "toa_malformed",
    "syn_pending_stored",
    "syn_pending_dropped",
    "getsockopt_ok",
    "getsockopt_empty",
    "toa_refused_address",
    "toa_ambiguous",
    "ack_pending_stored",
    "attach_fallback",
    "entries_reclaimed",
];

/// The programs of the object: (ELF function name, pin suffix). The getsockopt program is
/// chosen per kernel, see [`getsockopt_program`].
const LINKS: [&str; 4] = ["sockops", "getpeername4", "getpeername6", "getsockopt"];
const MAPS: [&str; 3] = ["toa_config", "toa_stats", "toa_sk"];

/// What went wrong; each message names the object or path and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pin directory is not on a BPF file system.
    #[error("{0} is not on a BPF file system: mount one with `mount -t bpf bpf /sys/fs/bpf`")]
    NotBpffs(PathBuf),
    /// The cgroup path is not a cgroup v2 directory.
    #[error(
        "{0} is not a cgroup v2 directory: mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NotCgroup2(PathBuf),
    /// A file system operation on a path failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The object file could not be loaded (parse, BTF, map creation).
    #[error("loading the BPF object {path}: {source}")]
    Load {
        path: PathBuf,
        source: Box<aya::EbpfError>,
    },
    /// The object lacks a program or map this loader needs (built from other sources?).
    #[error("the BPF object has no {0}: rebuild it from ebpf/bpf/toa.bpf.c (ebpf/bpf/build.sh)")]
    Missing(String),
    /// The kernel refused a program (verifier) or its attachment.
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    /// Pinning or opening a pinned object failed.
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    /// The running kernel's version could not be read.
    #[error("reading the kernel version: {0}")]
    KernelVersion(String),
}

/// How [`attach`] found the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was pinned: loaded and attached now.
    Loaded,
    /// Every link was pinned already: adopted, parameters written.
    Adopted,
    /// Some links were pinned, not all: those were removed and everything attached again (the
    /// maps, pinned by name, were kept).
    Repaired,
}

/// Options of [`attach`]: the object, the cgroup, the pin directory.
#[derive(Debug, Clone)]
pub struct Target {
    /// The compiled `toa.bpf.o`.
    pub object: PathBuf,
    /// cgroup v2 directory to attach to (default [`CGROUP_ROOT`]).
    pub cgroup: PathBuf,
    /// bpffs directory for the pins (default [`PIN_DIR`]).
    pub pin_dir: PathBuf,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn pin_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Pin {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// The getsockopt program for the running kernel: `toa_getsockopt` sets ENOENT/EINVAL like
/// the module, which kernels >= 5.18 allow (`ctx->retval` is the run context's return value);
/// older ones turn any error but the kernel's own into EFAULT, so they get
/// `toa_getsockopt_legacy`, whose empty answer stays the kernel's ENOPROTOOPT.
pub fn getsockopt_program() -> Result<&'static str, Error> {
    let v = KernelVersion::current().map_err(|e| Error::KernelVersion(e.to_string()))?;
    Ok(if v >= KernelVersion::new(5, 18, 0) {
        "toa_getsockopt"
    } else {
        "toa_getsockopt_legacy"
    })
}

/// The sock_ops program for the running kernel: `toa_sockops` walks the TCP options through
/// `bpf_loop` (kernels >= 5.17), which the verifier checks in a few thousand instructions;
/// older kernels get `toa_sockops_legacy`, whose unrolled walk it checks position by position.
pub fn sockops_program() -> Result<&'static str, Error> {
    let v = KernelVersion::current().map_err(|e| Error::KernelVersion(e.to_string()))?;
    Ok(if v >= KernelVersion::new(5, 17, 0) {
        "toa_sockops"
    } else {
        "toa_sockops_legacy"
    })
}

fn link_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("link_{name}"))
}

fn prog_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("prog_{name}"))
}

/// Loads, configures, attaches and pins the backend, or adopts the pinned one. Returns how it
/// went. The parameters are written in every case.
pub fn attach(t: &Target, params: &Params) -> Result<Outcome, Error> {
    sys::check_bpffs(&t.pin_dir)?;
    sys::check_cgroup2(&t.cgroup)?;
    fs::create_dir_all(&t.pin_dir).map_err(io("creating", &t.pin_dir))?;
    let pinned: Vec<bool> = LINKS
        .iter()
        .map(|l| link_path(&t.pin_dir, l).exists())
        .collect();
    // A backend pinned by an older version whose `toa_config` has another layout (IPv6
    // trusted sources were added at its end): its programs cannot take these parameters, so
    // it is loaded again (Repaired) with a new `toa_config`; `toa_sk` and `toa_stats` are kept.
    let config_pin = t.pin_dir.join("toa_config");
    let stale_config = config_layout_differs(&config_pin)?;
    if pinned.iter().all(|p| *p) && !stale_config {
        // Each link must still open as a link: a stale file would make this a silent no-op.
        for l in LINKS {
            let p = link_path(&t.pin_dir, l);
            PinnedLink::from_pin(&p).map_err(pin_err(&p))?;
        }
        write_config(&t.pin_dir, params)?;
        return Ok(Outcome::Adopted);
    }
    let repaired = pinned.iter().any(|p| *p) || stale_config;
    for l in LINKS {
        let p = link_path(&t.pin_dir, l);
        // Detached now, not when the pin's inode goes (later): the old and the new programs
        // must not run side by side (counters would count twice).
        if p.exists() {
            if let Err(e) = sys::link_detach_pinned(&p) {
                tracing::warn!(path = %p.display(), error = %e, "BPF_LINK_DETACH failed; removing the pin only");
            }
        }
        remove_if_exists(&p)?;
        remove_if_exists(&prog_path(&t.pin_dir, l))?;
    }
    if stale_config {
        tracing::info!(path = %config_pin.display(), "toa_config has an older layout: replaced");
        remove_if_exists(&config_pin)?;
    }
    load_and_attach(t, params)?;
    Ok(if repaired {
        Outcome::Repaired
    } else {
        Outcome::Loaded
    })
}

/// True when `path` exists and is not a pinned map whose value is `struct toa_config` of this
/// version: an older layout, or a leftover that does not open as a map at all (either way the
/// backend is loaded again with a new one).
fn config_layout_differs(path: &Path) -> Result<bool, Error> {
    if !path.exists() {
        return Ok(false);
    }
    match aya::maps::MapInfo::from_pin(path) {
        Ok(info) => Ok(info.value_size() as usize != std::mem::size_of::<params::RawConfig>()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "toa_config pin does not open as a map: replaced");
            Ok(true)
        }
    }
}

fn load_and_attach(t: &Target, params: &Params) -> Result<(), Error> {
    let t0 = std::time::Instant::now();
    let phase = |what: &str| tracing::debug!(ms = t0.elapsed().as_millis() as u64, "{what}");
    let mut bpf = EbpfLoader::new()
        // The programs use only UAPI context structs, so there is nothing to relocate against
        // the kernel's BTF: skipping the parse of /sys/kernel/btf/vmlinux saves most of the
        // load time in a TCG guest.
        .btf(None)
        .default_map_pin_directory(&t.pin_dir)
        .load_file(&t.object)
        .map_err(|source| Error::Load {
            path: t.object.clone(),
            source: Box::new(source),
        })?;
    {
        let map = bpf
            .map_mut("toa_config")
            .ok_or_else(|| Error::Missing("map toa_config".into()))?;
        let mut cfg: Array<&mut MapData, params::RawConfig> =
            Array::try_from(map).map_err(|source| Error::Map {
                name: "toa_config",
                source: Box::new(source),
            })?;
        cfg.set(0, *params.to_raw(), 0)
            .map_err(|source| Error::Map {
                name: "toa_config",
                source: Box::new(source),
            })?;
    }
    phase("object loaded, maps created, parameters written");
    let cgroup = fs::File::open(&t.cgroup).map_err(io("opening", &t.cgroup))?;
    // Through bpf_link (5.7+, which aya uses here) the attach flags must be 0 (`Single`): a
    // link coexists with other programs on the cgroup whatever the mode; AllowMultiple is
    // refused with EINVAL (seen on 6.1).
    let mode = CgroupAttachMode::Single;

    // sock_ops first: connections established from now on get entries; the readers follow.
    {
        let name = sockops_program()?;
        let prog: &mut SockOps = program(&mut bpf, name)?;
        prog.load().map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        // The verifier's work (kernels >= 5.16 report it): the main part of the attach time.
        if let Ok(info) = prog.info() {
            tracing::debug!(
                program = name,
                verified_insns = info.verified_instruction_count(),
                "sock_ops program verified"
            );
        }
        pin_prog(
            prog.pin(prog_path(&t.pin_dir, "sockops")),
            &t.pin_dir,
            "sockops",
        )?;
        let id = prog
            .attach(&cgroup, mode)
            .map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
        let link = prog.take_link(id).map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        let p = link_path(&t.pin_dir, "sockops");
        FdLink::try_from(link)
            .map_err(pin_err(&p))?
            .pin(&p)
            .map_err(pin_err(&p))?;
    }
    phase("sock_ops verified and attached");
    for (fname, short) in [
        ("toa_getpeername4", "getpeername4"),
        ("toa_getpeername6", "getpeername6"),
    ] {
        let prog: &mut CgroupSockAddr = program(&mut bpf, fname)?;
        let name: &'static str = fname;
        prog.load().map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        pin_prog(prog.pin(prog_path(&t.pin_dir, short)), &t.pin_dir, short)?;
        let id = prog
            .attach(&cgroup, mode)
            .map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
        let link = prog.take_link(id).map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        let p = link_path(&t.pin_dir, short);
        FdLink::try_from(link)
            .map_err(pin_err(&p))?
            .pin(&p)
            .map_err(pin_err(&p))?;
    }
    phase("getpeername4/6 verified and attached");
    {
        let name = getsockopt_program()?;
        let prog: &mut CgroupSockopt = program(&mut bpf, name)?;
        prog.load().map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        pin_prog(
            prog.pin(prog_path(&t.pin_dir, "getsockopt")),
            &t.pin_dir,
            "getsockopt",
        )?;
        // aya 0.14 cannot turn a CgroupSockopt link into an FdLink: create and pin it directly.
        let fd = prog.fd().map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
        let p = link_path(&t.pin_dir, "getsockopt");
        sys::link_create_and_pin(fd.as_fd(), cgroup.as_fd(), sys::BPF_CGROUP_GETSOCKOPT, &p)?;
    }
    phase("getsockopt verified and attached");
    Ok(())
}

fn pin_prog(r: Result<(), aya::pin::PinError>, dir: &Path, short: &str) -> Result<(), Error> {
    let p = prog_path(dir, short);
    r.map_err(pin_err(&p))
}

fn program<'a, T>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = bpf
        .program_mut(name)
        .ok_or_else(|| Error::Missing(format!("program {name}")))?;
    p.try_into()
        .map_err(|_| Error::Missing(format!("program {name} of the expected type")))
}

fn remove_if_exists(p: &Path) -> Result<(), Error> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "removing",
            path: p.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Where [`probe`] pins the maps of its trial load: a sibling of the pin directory
/// (`/sys/fs/bpf/toa-probe`), never inside it, and removed again.
pub fn probe_dir(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "toa".to_string());
    pin_dir.with_file_name(format!("{name}-probe"))
}

/// Can this node run the backend? Checks what [`attach`] needs without attaching anything:
/// the pin directory on a BPF file system, the cgroup a cgroup v2 directory, and the object's
/// programs for this kernel accepted by the verifier (loaded, then closed). The maps of the
/// trial load are pinned under [`probe_dir`] and removed before returning. The kernel's own BTF
/// is not needed: the programs use only UAPI context structs (see [`attach`]).
pub fn probe(t: &Target) -> Result<(), Error> {
    sys::check_bpffs(&t.pin_dir)?;
    sys::check_cgroup2(&t.cgroup)?;
    let dir = probe_dir(&t.pin_dir);
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let result = probe_load(t, &dir);
    let cleanup = remove_probe_dir(&dir);
    result.and(cleanup)
}

fn probe_load(t: &Target, dir: &Path) -> Result<(), Error> {
    let mut bpf = EbpfLoader::new()
        .btf(None)
        .default_map_pin_directory(dir)
        .load_file(&t.object)
        .map_err(|source| Error::Load {
            path: t.object.clone(),
            source: Box::new(source),
        })?;
    let sockops = sockops_program()?;
    let prog: &mut SockOps = program(&mut bpf, sockops)?;
    prog.load().map_err(|source| Error::Program {
        name: sockops,
        source: Box::new(source),
    })?;
    for name in ["toa_getpeername4", "toa_getpeername6"] {
        let prog: &mut CgroupSockAddr = program(&mut bpf, name)?;
        prog.load().map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?;
    }
    let getsockopt = getsockopt_program()?;
    let prog: &mut CgroupSockopt = program(&mut bpf, getsockopt)?;
    prog.load().map_err(|source| Error::Program {
        name: getsockopt,
        source: Box::new(source),
    })?;
    Ok(())
}

fn remove_probe_dir(dir: &Path) -> Result<(), Error> {
    for m in MAPS {
        remove_if_exists(&dir.join(m))?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "removing the probe directory",
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes the parameters into the pinned `toa_config` map (applies to connections established
/// from now on, like the module's parameters).
pub fn write_config(pin_dir: &Path, params: &Params) -> Result<(), Error> {
    let p = pin_dir.join("toa_config");
    let data = MapData::from_pin(&p).map_err(pin_err(&p))?;
    let mut cfg: Array<MapData, params::RawConfig> = Array::try_from(aya::maps::Map::Array(data))
        .map_err(|source| Error::Map {
        name: "toa_config",
        source: Box::new(source),
    })?;
    cfg.set(0, *params.to_raw(), 0)
        .map_err(|source| Error::Map {
            name: "toa_config",
            source: Box::new(source),
        })
}

/// True when every link of the backend is pinned under `pin_dir`.
pub fn is_attached(pin_dir: &Path) -> bool {
    LINKS.iter().all(|l| link_path(pin_dir, l).exists())
}

/// Detaches: each pinned link is detached at once (`BPF_LINK_DETACH`), then the link, program
/// and map pins and the directory are removed. Connections show their original peer address
/// from then on. Returns false when nothing was pinned.
pub fn detach(pin_dir: &Path) -> Result<bool, Error> {
    if !pin_dir.exists() {
        return Ok(false);
    }
    let mut any = false;
    for l in LINKS {
        let p = link_path(pin_dir, l);
        if p.exists() {
            if let Err(e) = sys::link_detach_pinned(&p) {
                // Not a link (a stale file) or an old kernel: removing the pin still detaches,
                // only later.
                tracing::warn!(path = %p.display(), error = %e, "BPF_LINK_DETACH failed; removing the pin only");
            }
        }
        for p in [link_path(pin_dir, l), prog_path(pin_dir, l)] {
            any |= p.exists();
            remove_if_exists(&p)?;
        }
    }
    for m in MAPS {
        let p = pin_dir.join(m);
        any |= p.exists();
        remove_if_exists(&p)?;
    }
    match fs::remove_dir(pin_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "removing (other files left in it?)",
            path: pin_dir.to_owned(),
            source: e,
        }),
        _ => Ok(any),
    }
}

/// The counters summed over CPUs, `(name, value)` in [`COUNTER_NAMES`] order, read from the
/// pinned `toa_stats` map.
pub fn read_counters(pin_dir: &Path) -> Result<Vec<(&'static str, u64)>, Error> {
    let p = pin_dir.join("toa_stats");
    let data = MapData::from_pin(&p).map_err(pin_err(&p))?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
        .map_err(|source| Error::Map {
            name: "toa_stats",
            source: Box::new(source),
        })?;
    let mut out = Vec::with_capacity(COUNTER_NAMES.len());
    for (i, name) in (0u32..).zip(COUNTER_NAMES) {
        let v = stats.get(&i, 0).map_err(|source| Error::Map {
            name: "toa_stats",
            source: Box::new(source),
        })?;
        out.push((name, v.iter().sum()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_match_the_c_enum() {
        // The enum in the shared header, in order: the map index is the enum value.
        let h = include_str!("../bpf/toa_ebpf.h");
        let start = h.find("enum toa_counter {").unwrap_or(0);
        let body = &h[start..];
        let end = body.find("TOA_CNT_MAX").unwrap_or(body.len());
        let names: Vec<String> = body[..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("TOA_CNT_"))
            .map(|l| l.trim_end_matches(',').to_ascii_lowercase())
            .collect();
        assert_eq!(names, COUNTER_NAMES.to_vec());
    }

    #[test]
    fn attach_refuses_a_directory_outside_bpffs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Target {
            object: dir.path().join("toa.bpf.o"),
            cgroup: PathBuf::from(CGROUP_ROOT),
            pin_dir: dir.path().join("toa"),
        };
        let e = attach(&t, &Params::default()).expect_err("tmpfs is not bpffs");
        assert!(matches!(e, Error::NotBpffs(_)), "{e}");
        assert!(e.to_string().contains("mount -t bpf"), "{e}");
    }

    #[test]
    fn probe_refuses_a_directory_outside_bpffs_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Target {
            object: dir.path().join("toa.bpf.o"),
            cgroup: PathBuf::from(CGROUP_ROOT),
            pin_dir: dir.path().join("toa"),
        };
        let e = probe(&t).expect_err("tmpfs is not bpffs");
        assert!(matches!(e, Error::NotBpffs(_)), "{e}");
        assert!(!probe_dir(&t.pin_dir).exists());
        assert!(!t.pin_dir.exists());
    }

    #[test]
    fn the_probe_pins_beside_the_pin_directory() {
        assert_eq!(
            probe_dir(Path::new("/sys/fs/bpf/toa")),
            PathBuf::from("/sys/fs/bpf/toa-probe")
        );
    }

    /// A `toa_config` leftover that does not open as a pinned map (a plain file here) is
    /// replaced, not an error that blocks the repair; an absent one is no reason to reload.
    #[test]
    fn a_config_pin_that_is_no_map_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = dir.path().join("toa_config");
        assert!(!config_layout_differs(&pin).expect("absent"));
        fs::write(&pin, b"not a map").expect("write");
        assert!(config_layout_differs(&pin).expect("a plain file"));
    }

    #[test]
    fn detach_of_nothing_is_false() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!detach(&dir.path().join("absent")).expect("detach"));
    }
}
