//! Build root: the host's sources, the plan, the cache key and its validation, and the fetch.

use super::*;
use crate::host::fake::{FakeBootstrap, FakeHost};

const BULLSEYE_OS: &str = "PRETTY_NAME=\"Debian GNU/Linux 11 (bullseye)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\nID=debian\n";
const GCC10: &str = "CONFIG_CC_VERSION_TEXT=\"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110\"\n";
const REL: &str = "5.10.0-35-amd64";

fn gcc10() -> KernelCompiler {
    compiler::parse_config(GCC10).expect("gcc-10")
}

/// A Debian 11 node with a one-line sources.list and a deb822 file.
fn bullseye_host() -> FakeHost {
    let host = FakeHost::debian();
    host.set_uname(REL, "#1 SMP Debian 5.10.237-1 (2025-05-19)");
    host.put("/etc/os-release", BULLSEYE_OS);
    host.put(
        "/etc/apt/sources.list",
        "# the node's mirror\ndeb http://deb.debian.org/debian bullseye main\ndeb-src http://deb.debian.org/debian bullseye main\n",
    );
    host.put(
        "/etc/apt/sources.list.d/security.sources",
        "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bullseye-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    );
    host.put("/etc/apt/trusted.gpg.d/debian-archive-bullseye.gpg", "k");
    host
}

#[test]
fn one_line_sources_with_options_comments_and_deb_src() {
    let text = "\
# comment
deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg,/etc/apt/keyrings/b.asc] http://m.example/debian bookworm main contrib # trailing
deb-src http://m.example/debian bookworm main
deb http://m.example/debian bookworm-backports main
debian-is-not-a-type x y
";
    let s = parse_one_line(text, "/etc/apt/sources.list").expect("parse");
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].uris, ["http://m.example/debian"]);
    assert_eq!(s[0].suites, ["bookworm"]);
    assert_eq!(s[0].components, ["main", "contrib"]);
    assert_eq!(
        s[0].signed_by,
        [
            SignedBy::File("/usr/share/keyrings/a.gpg".into()),
            SignedBy::File("/etc/apt/keyrings/b.asc".into())
        ]
    );
    assert_eq!(s[0].origin, "/etc/apt/sources.list:2");
    assert_eq!(s[1].suites, ["bookworm-backports"]);
    assert!(s[1].signed_by.is_empty());
    let e = parse_one_line("deb [signed-by=/x http://m bookworm main\n", "f.list")
        .expect_err("unclosed");
    assert!(e.contains("f.list:1") && e.contains("unclosed"), "{e}");
    let e = parse_one_line("deb http://m\n", "f.list").expect_err("no suite");
    assert!(e.contains("needs a URI and a suite"), "{e}");
}

#[test]
fn deb822_sources_with_several_values_disabled_stanzas_and_inline_keys() {
    let text = "\
Types: deb deb-src
URIs: http://a.example/debian http://b.example/debian
Suites: trixie trixie-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# disabled
Types: deb
URIs: http://c.example/debian
Suites: trixie
Enabled: no

Types: deb-src
URIs: http://d.example/debian
Suites: trixie

Types: deb
URIs: http://e.example/debian
Suites: sid
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF
 -----END PGP PUBLIC KEY BLOCK-----
";
    let s = parse_deb822(text, "x.sources").expect("parse");
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(
        s[0].uris,
        ["http://a.example/debian", "http://b.example/debian"]
    );
    assert_eq!(s[0].suites, ["trixie", "trixie-updates"]);
    assert_eq!(s[0].components, ["main", "non-free-firmware"]);
    assert_eq!(
        s[0].signed_by,
        [SignedBy::File(
            "/usr/share/keyrings/debian-archive-keyring.gpg".into()
        )]
    );
    assert_eq!(s[1].suites, ["sid"]);
    match &s[1].signed_by[..] {
        [SignedBy::Inline(k)] => {
            assert!(
                k.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END"),
                "{k}"
            )
        }
        other => panic!("inline key expected, got {other:?}"),
    }
    let e = parse_deb822("Types: deb\nSuites: trixie\n", "y.sources").expect_err("no URIs");
    assert!(e.contains("y.sources") && e.contains("no URIs"), "{e}");
}

#[test]
fn host_sources_reads_the_list_then_the_directory() {
    let host = bullseye_host();
    host.put("/etc/apt/sources.list.d/README", "not a source");
    host.put(
        "/etc/apt/sources.list.d/backports.list",
        "deb http://deb.debian.org/debian bullseye-backports main\n",
    );
    let s = host_sources(&host).expect("sources");
    let suites: Vec<&str> = s.iter().map(|s| s.suites[0].as_str()).collect();
    assert_eq!(
        suites,
        ["bullseye", "bullseye-backports", "bullseye-security"]
    );
    host.put("/etc/apt/sources.list.d/broken.list", "deb http://x\n");
    let e = host_sources(&host).expect_err("broken");
    assert!(e.contains("/etc/apt/sources.list.d/broken.list:1"), "{e}");
}

#[test]
fn os_release_codename() {
    let os = OsRelease::parse(BULLSEYE_OS);
    assert_eq!(os.version_codename, "bullseye");
    assert!(Debian.matches(&os));
    assert!(family_for(&os).is_some());
    let fedora = OsRelease::parse("ID=fedora\nVERSION_ID=40\n");
    assert!(family_for(&fedora).is_none());
    let ubuntu = OsRelease::parse("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n");
    assert!(family_for(&ubuntu).is_some());
}

#[test]
fn kernel_compiler_from_config_boot_config_or_proc_version() {
    let v = "Linux version 5.10.0-35-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 20210110, GNU ld (GNU Binutils for Debian) 2.35.2) #1 SMP Debian 5.10.237-1 (2025-05-19)\n";
    let c = parse_proc_version(v).expect("proc version");
    assert_eq!((c.program.as_str(), c.major), ("gcc-10", 10));
    assert_eq!(c.text, "gcc-10 (Debian 10.2.1-6) 10.2.1 20210110");
    assert_eq!(
        parse_proc_version(
            "Linux version 6.8.0 (x@y) (Ubuntu clang version 18.1.3, LLD 18.1.3) #1\n"
        ),
        None
    );
    let host = bullseye_host();
    host.put("/proc/version", v);
    assert_eq!(kernel_compiler(&host, None, REL).map(|c| c.major), Some(10));
    host.put(
        &format!("/boot/config-{REL}"),
        "CONFIG_CC_VERSION_TEXT=\"gcc-11 (Debian 11.1.0-1) 11.1.0\"\n",
    );
    assert_eq!(kernel_compiler(&host, None, REL).map(|c| c.major), Some(11));
    host.put(
        &format!("/lib/modules/{REL}/build/.config"),
        "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n",
    );
    let kdir = PathBuf::from(format!("/lib/modules/{REL}/build"));
    assert_eq!(
        kernel_compiler(&host, Some(&kdir), REL).map(|c| c.major),
        Some(12)
    );
}

#[test]
fn cache_key_names_suite_release_and_compiler() {
    let key = RootKey {
        family: "debian".into(),
        suite: "bullseye".into(),
        release: REL.into(),
        gcc_major: Some(10),
    };
    assert_eq!(key.dir_name(), "debian-bullseye-5.10.0-35-amd64-gcc10");
    let other = RootKey {
        gcc_major: Some(12),
        ..key.clone()
    };
    assert_ne!(key.dir_name(), other.dir_name());
    let hostile = RootKey {
        suite: "../../etc".into(),
        gcc_major: None,
        ..key
    };
    assert_eq!(
        hostile.dir_name(),
        "debian-.._.._etc-5.10.0-35-amd64-gccdefault"
    );
    assert!(!hostile.dir_name().contains('/'));
}

#[test]
fn plan_uses_the_node_suite_sources_and_keys() {
    let host = bullseye_host();
    let os = OsRelease::parse(BULLSEYE_OS);
    let plan = Debian
        .plan(&host, &os, REL, Some(&gcc10()), None)
        .expect("plan");
    assert_eq!(plan.key.suite, "bullseye");
    assert_eq!(plan.key.gcc_major, Some(10));
    assert_eq!(
        plan.packages,
        ["gcc-10", "make", "linux-headers-5.10.0-35-amd64"]
    );
    assert_eq!(
        plan.sources,
        [
            "deb http://deb.debian.org/debian bullseye main",
            "deb [signed-by=/fake-host-root/usr/share/keyrings/debian-archive-keyring.gpg] http://security.debian.org/debian-security bullseye-security main",
        ]
    );
    assert_eq!(
        plan.mirrors,
        [
            "http://deb.debian.org/debian",
            "http://security.debian.org/debian-security"
        ]
    );
    assert_eq!(
        plan.keyrings,
        [PathBuf::from("/fake-host-root/etc/apt/trusted.gpg.d")]
    );
    let cmd = Debian.fetch_command(
        &plan,
        Path::new("/c/buildroot/.tmp-x"),
        Duration::from_secs(9),
    );
    assert_eq!(cmd.program, "mmdebstrap");
    assert!(cmd
        .args
        .contains(&"--include=gcc-10,make,linux-headers-5.10.0-35-amd64".to_string()));
    assert!(cmd
        .args
        .contains(&"--keyring=/fake-host-root/etc/apt/trusted.gpg.d".to_string()));
    assert!(cmd.args.contains(&"--variant=minbase".to_string()));
    let suite_at = cmd
        .args
        .iter()
        .position(|a| a == "bullseye")
        .expect("suite");
    assert_eq!(cmd.args[suite_at + 1], "/c/buildroot/.tmp-x");
    assert_eq!(cmd.args[suite_at + 2..], plan.sources[..]);
    assert_eq!(cmd.timeout, Duration::from_secs(9));
}

#[test]
fn mirror_override_replaces_the_uris_and_keeps_suites_and_keys() {
    let host = bullseye_host();
    let os = OsRelease::parse(BULLSEYE_OS);
    let plan = Debian
        .plan(
            &host,
            &os,
            REL,
            Some(&gcc10()),
            Some("http://10.0.2.100:8080/debian"),
        )
        .expect("plan");
    assert!(plan.mirror_overridden);
    assert_eq!(plan.mirrors, ["http://10.0.2.100:8080/debian"]);
    assert_eq!(
        plan.sources,
        [
            "deb http://10.0.2.100:8080/debian bullseye main",
            "deb [signed-by=/fake-host-root/usr/share/keyrings/debian-archive-keyring.gpg] http://10.0.2.100:8080/debian bullseye-security main",
        ]
    );
    // A node without sources: the override and os-release's codename are enough.
    host.remove_prefix("/etc/apt");
    let plan = Debian
        .plan(&host, &os, REL, None, Some("http://m.example/debian"))
        .expect("plan");
    assert_eq!(plan.sources, ["deb http://m.example/debian bullseye main"]);
    assert_eq!(plan.packages, ["make", "linux-headers-5.10.0-35-amd64"]);
    // Without either, the error names the fix.
    let e = Debian
        .plan(&host, &os, REL, None, None)
        .expect_err("no sources");
    let m = e.to_string();
    assert!(
        m.contains("no apt sources") && m.contains("agent.buildRootMirror"),
        "{m}"
    );
    assert!(m.contains("linux-headers-5.10.0-35-amd64"), "{m}");
}

#[test]
fn sid_takes_the_suite_of_its_sources() {
    let host = FakeHost::debian();
    let os = OsRelease::parse("PRETTY_NAME=\"Debian GNU/Linux forky/sid\"\nID=debian\n");
    host.put(
        "/etc/apt/sources.list.d/debian.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: sid\nComponents: main\n",
    );
    let plan = Debian
        .plan(&host, &os, "7.2.0-1-amd64", None, None)
        .expect("plan");
    assert_eq!(plan.key.suite, "sid");
}

#[test]
fn fetch_failures_are_classified() {
    let host = bullseye_host();
    let os = OsRelease::parse(BULLSEYE_OS);
    let plan = Debian
        .plan(&host, &os, REL, Some(&gcc10()), None)
        .expect("plan");
    let e = Debian.explain_failure(
        &plan,
        Some(1),
        "I: running apt-get update...\nErr:1 http://deb.debian.org/debian bullseye InRelease\n  Could not connect to deb.debian.org:80 (151.101.2.132). - connect (111: Connection refused)\nE: apt-get update failed\n",
    );
    let m = e.to_string();
    assert!(
        matches!(e, BuildRootError::MirrorUnreachable { .. }),
        "{e:?}"
    );
    assert!(m.contains("http://deb.debian.org/debian"), "{m}");
    assert!(m.contains("agent.buildRootMirror"), "{m}");
    assert!(m.contains("Connection refused"), "{m}");
    let e = Debian.explain_failure(
        &plan,
        Some(1),
        "W: GPG error: http://deb.debian.org/debian bullseye InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 0E98404D386FA1D9\n",
    );
    assert!(matches!(e, BuildRootError::Failed(_)), "{e:?}");
    assert!(
        e.to_string()
            .contains("not signed by a key the node trusts"),
        "{e}"
    );
    let e = Debian.explain_failure(
        &plan,
        Some(100),
        "E: Unable to locate package linux-headers-5.10.0-35-amd64\n",
    );
    assert!(
        e.to_string()
            .contains("add the suite that ships the running kernel"),
        "{e}"
    );
    let e = Debian.explain_failure(&plan, Some(2), "something else\n");
    assert!(
        e.to_string().contains("exit code Some(2)") && e.to_string().contains("something else"),
        "{e}"
    );
}

fn plan_in(host: &FakeHost) -> Plan {
    let os = OsRelease::parse(BULLSEYE_OS);
    Debian
        .plan(host, &os, REL, Some(&gcc10()), None)
        .expect("plan")
}

fn mmdebstraps(host: &FakeHost) -> usize {
    host.lock()
        .runs
        .iter()
        .filter(|r| r.program == "mmdebstrap")
        .count()
}

#[test]
fn ensure_fetches_once_then_reuses_the_validated_root() {
    let host = bullseye_host();
    host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let cache = tempfile::tempdir().expect("t");
    let plan = plan_in(&host);
    let t = Duration::from_secs(60);
    let root = ensure(&host, &Debian, &plan, cache.path(), t).expect("root");
    assert!(root.fetched);
    assert_eq!(
        root.dir,
        cache
            .path()
            .join("buildroot/debian-bullseye-5.10.0-35-amd64-gcc10")
    );
    assert_eq!(
        root.kdir,
        PathBuf::from(format!("/lib/modules/{REL}/build"))
    );
    // Nothing temporary is left: only the finished root.
    let names: Vec<String> = std::fs::read_dir(cache.path().join("buildroot"))
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["debian-bullseye-5.10.0-35-amd64-gcc10"]);
    let again = ensure(&host, &Debian, &plan, cache.path(), t).expect("root");
    assert!(!again.fetched);
    assert_eq!(mmdebstraps(&host), 1);
    // A root that lost its compiler fails validation and is fetched again.
    std::fs::remove_file(root.dir.join("usr/bin/gcc-10")).expect("rm");
    let e = validate(&root.dir, &plan.key).expect_err("invalid");
    assert!(e.contains("/usr/bin/gcc-10 is missing"), "{e}");
    let fresh = ensure(&host, &Debian, &plan, cache.path(), t).expect("root");
    assert!(fresh.fetched);
    assert_eq!(mmdebstraps(&host), 2);
}

#[test]
fn validation_checks_the_stamp_key_and_the_build_tree() {
    let host = bullseye_host();
    host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let cache = tempfile::tempdir().expect("t");
    let plan = plan_in(&host);
    let root = ensure(&host, &Debian, &plan, cache.path(), Duration::from_secs(5)).expect("root");
    let other = RootKey {
        gcc_major: Some(12),
        ..plan.key.clone()
    };
    let e = validate(&root.dir, &other).expect_err("other key");
    assert!(e.contains("is for"), "{e}");
    std::fs::remove_file(
        root.dir
            .join(format!("usr/src/linux-headers-{REL}/Makefile")),
    )
    .expect("rm");
    let e = validate(&root.dir, &plan.key).expect_err("no tree");
    assert!(e.contains("no build tree of 5.10.0-35-amd64"), "{e}");
    std::fs::write(root.dir.join(STAMP), "{").expect("w");
    let e = validate(&root.dir, &plan.key).expect_err("bad stamp");
    assert!(e.contains("does not parse"), "{e}");
    let e = validate(Path::new("/nonexistent-root"), &plan.key).expect_err("none");
    assert!(e.contains("no readable"), "{e}");
}

#[test]
fn a_failed_fetch_leaves_nothing_and_says_why() {
    let host = bullseye_host();
    host.lock().bootstrap = Some(FakeBootstrap::Fail {
        code: 1,
        output: "E: Unable to locate package linux-headers-5.10.0-35-amd64\n".into(),
    });
    let cache = tempfile::tempdir().expect("t");
    let plan = plan_in(&host);
    let e = ensure(&host, &Debian, &plan, cache.path(), Duration::from_secs(5)).expect_err("fails");
    assert!(e.to_string().contains("Unable to locate package"), "{e}");
    let left = std::fs::read_dir(cache.path().join("buildroot"))
        .expect("ls")
        .count();
    assert_eq!(left, 0, "the partial root is removed");
    // A "successful" bootstrap without the headers is incomplete, not cached.
    host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let mut partial = plan.clone();
    partial.packages.retain(|p| !p.starts_with("linux-headers"));
    let e = ensure(
        &host,
        &Debian,
        &partial,
        cache.path(),
        Duration::from_secs(5),
    )
    .expect_err("incomplete");
    assert!(e.to_string().contains("incomplete"), "{e}");
    assert_eq!(
        std::fs::read_dir(cache.path().join("buildroot"))
            .expect("ls")
            .count(),
        0
    );
    // No mmdebstrap in the image.
    host.lock().bootstrap = None;
    let e = ensure(&host, &Debian, &plan, cache.path(), Duration::from_secs(5)).expect_err("none");
    assert!(e.to_string().contains("images/node-agent.packages"), "{e}");
}

#[test]
fn stale_temporary_roots_are_removed() {
    let cache = tempfile::tempdir().expect("t");
    let stale = cache.path().join("buildroot/.tmp-debian-x-123/usr");
    std::fs::create_dir_all(&stale).expect("mk");
    let kept = cache.path().join("buildroot/debian-bullseye-x-gcc10");
    std::fs::create_dir_all(&kept).expect("mk");
    clean_stale(cache.path());
    assert!(!stale.exists());
    assert!(kept.exists());
}

#[test]
fn kbuild_helpers_that_do_not_run_in_the_image_are_detected() {
    let host = FakeHost::debian();
    let tree = tempfile::tempdir().expect("t");
    // No fixdep in the tree: nothing to try.
    assert_eq!(helpers_unusable(&host, tree.path()), None);
    std::fs::create_dir_all(tree.path().join("scripts/basic")).expect("mk");
    std::fs::write(tree.path().join("scripts/basic/fixdep"), "").expect("w");
    host.lock().fixdep = Some((1, "Usage: fixdep <depfile> <target> <cmdline>\n".into()));
    assert_eq!(helpers_unusable(&host, tree.path()), None);
    host.lock().fixdep = Some((
        1,
        "scripts/basic/fixdep: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by scripts/basic/fixdep)\n".into(),
    ));
    let m = helpers_unusable(&host, tree.path()).expect("unusable");
    assert!(
        m.contains("GLIBC_2.38") && m.contains("does not run in the agent image"),
        "{m}"
    );
}

/// After a reboot into another kernel the old kernel's build root stays while it was used
/// recently and goes once unused for longer than the maximum age (as cached modules do); the
/// running kernel's root stays however old, and unstamped directories are not touched.
#[test]
fn prune_removes_roots_of_other_releases_unused_for_max_age() {
    let host = bullseye_host();
    host.lock().bootstrap = Some(FakeBootstrap::Succeed);
    let cache = tempfile::tempdir().expect("t");
    let t = Duration::from_secs(60);
    let old = ensure(&host, &Debian, &plan_in(&host), cache.path(), t).expect("root");
    let day = Duration::from_secs(86_400);
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // The node ran REL until t0 (the hourly prune marks its root), then 6.1.
    assert!(prune(cache.path(), REL, 30 * day, t0).is_empty());
    let newer = "6.1.0-40-amd64";
    let mut plan = plan_in(&host);
    plan.key.release = newer.into();
    let new_root = cache.path().join(ROOTS_DIR).join(plan.key.dir_name());
    std::fs::create_dir_all(new_root.join("usr/bin")).expect("mk");
    let stamp = Stamp {
        key: plan.key.clone(),
        packages: Vec::new(),
        sources: Vec::new(),
    };
    std::fs::write(
        new_root.join(STAMP),
        serde_json::to_vec(&stamp).expect("json"),
    )
    .expect("stamp");
    let unstamped = cache.path().join(ROOTS_DIR).join("debian-unknown");
    std::fs::create_dir_all(&unstamped).expect("mk");
    assert!(prune(cache.path(), newer, 30 * day, t0 + 29 * day).is_empty());
    assert!(old.dir.exists());
    let removed = prune(cache.path(), newer, 30 * day, t0 + 31 * day);
    assert_eq!(
        removed
            .iter()
            .map(|k| k.release.as_str())
            .collect::<Vec<_>>(),
        [REL]
    );
    assert!(!old.dir.exists());
    assert!(new_root.exists() && unstamped.exists());
    // The running release's root stays, however old.
    assert!(prune(cache.path(), newer, 30 * day, t0 + 400 * day).is_empty());
    assert!(new_root.exists());
}
