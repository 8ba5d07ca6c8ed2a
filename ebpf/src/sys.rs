//! The few system calls aya 0.14 does not offer here: file system type checks, and a cgroup
//! getsockopt link created and pinned by hand (`BPF_LINK_CREATE`, `BPF_OBJ_PIN`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::Error;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// `enum bpf_cmd` values (linux/bpf.h).
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `enum bpf_attach_type` value of `BPF_CGROUP_GETSOCKOPT`.
pub const BPF_CGROUP_GETSOCKOPT: u32 = 21;

fn fs_type(path: &Path) -> Result<i64, Error> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| Error::Io {
        what: "statfs",
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: statfs writes into a zeroed struct it owns for the call; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::Io {
            what: "statfs",
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// The pin directory (or, when it does not exist yet, its nearest existing parent) is on bpffs.
pub fn check_bpffs(dir: &Path) -> Result<(), Error> {
    let mut p = dir;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    if fs_type(p)? == BPF_FS_MAGIC {
        Ok(())
    } else {
        Err(Error::NotBpffs(dir.to_owned()))
    }
}

/// The directory is a cgroup v2 directory.
pub fn check_cgroup2(dir: &Path) -> Result<(), Error> {
    match fs_type(dir) {
        Ok(CGROUP2_SUPER_MAGIC) => Ok(()),
        _ => Err(Error::NotCgroup2(dir.to_owned())),
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-filled 64-byte union bpf_attr the kernel reads (size passed).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attaches `prog` to `cgroup` as a bpf_link of `attach_type` and pins the link at `path`; the
/// link fd is closed on return, the pin keeps the attachment.
pub fn link_create_and_pin(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    path: &Path,
) -> Result<(), Error> {
    let pin_err = |e: std::io::Error, what: &str| Error::Pin {
        path: path.to_owned(),
        source: format!("{what}: {e}").into(),
    };
    // link_create: prog_fd u32, target_fd u32, attach_type u32, flags u32.
    let mut attr = [0u64; 8];
    attr[0] = u64::from(prog.as_raw_fd() as u32) | (u64::from(cgroup.as_raw_fd() as u32) << 32);
    attr[1] = u64::from(attach_type);
    let fd = bpf(BPF_LINK_CREATE, &mut attr).map_err(|e| pin_err(e, "BPF_LINK_CREATE"))?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        pin_err(
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            "path",
        )
    })?;
    // obj_pin: pathname u64, bpf_fd u32, file_flags u32.
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64;
    attr[1] = u64::from(link.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map_err(|e| pin_err(e, "BPF_OBJ_PIN"))?;
    Ok(())
}

/// Detaches the link pinned at `path` now (`BPF_LINK_DETACH`, 5.9+), whoever else holds it.
/// Removing the pin alone is not enough: the bpffs inode drops its reference after an RCU grace
/// period and a work item, so on 5.10 `getpeername()` was still rewritten right after the pin
/// was gone (seen in the guest suite).
pub fn link_detach_pinned(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // obj_get: pathname u64, bpf_fd u32, file_flags u32.
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // link_detach: link_fd u32.
    let mut attr = [0u64; 8];
    attr[0] = u64::from(link.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr)?;
    Ok(())
}
