//! Package verification through the real `rpixen` binary and the real Debian archive (through apt):
//! a corrupted cached `.deb` and a changed pin stop the build naming the package, the file and both
//! digests; a version the archive no longer serves is said plainly; `rpixen pkg update` re-pins to the
//! archive's current version and the re-pinned package builds. Digests are checked with `sha256sum`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rpixen::pkg::PkgDef;

fn rpixen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpixen"))
        .args(args)
        .current_dir(testkit::repo_root())
        .output()
        .expect("run rpixen")
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rpixen failed ({}):\n{err}", out.status);
    err
}

fn failed(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "rpixen succeeded but should have failed:\n{err}");
    err
}

fn sha256sum(path: &Path) -> String {
    testkit::run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The busybox package's pin, and its `.deb` in the shared test cache (downloaded once).
fn busybox() -> (PkgDef, PathBuf) {
    let def = PkgDef::load(&testkit::repo_root().join("pkg/busybox")).unwrap();
    let cache = testkit::pkg_cache();
    ok(&rpixen(&["pkg", "fetch", "pkg/busybox", "--cache", s(&cache)]));
    let file = cache.join("debs/sha256").join(&def.debs[0].sha256);
    assert_eq!(sha256sum(&file), def.debs[0].sha256, "the shared cache holds the pinned file");
    (def, file)
}

/// A copy of pkg/busybox in a scratch repository, with `edit` applied to its pkg.yml.
fn scratch_package(root: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = root.join("repo/pkg/busybox");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(testkit::repo_root().join("pkg/busybox/pkg.yml")).unwrap();
    std::fs::write(dir.join("pkg.yml"), edit(text)).unwrap();
    dir
}

#[test]
fn corrupted_cached_deb_stops_the_build() {
    let (def, good) = busybox();
    let pin = &def.debs[0].sha256;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cached = cache.join("debs/sha256").join(pin);
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&cached, &bytes).unwrap();
    let actual = sha256sum(&cached);
    assert_ne!(&actual, pin);

    let out_dir = tmp.path().join("out");
    let err = failed(&rpixen(&[
        "pkg",
        "build",
        "pkg/busybox",
        "--offline",
        "--cache",
        s(&cache),
        "-o",
        s(&out_dir),
    ]));
    for needle in ["package busybox", "busybox-static", s(&cached), pin.as_str(), actual.as_str()] {
        assert!(err.contains(needle), "error lacks {needle:?}:\n{err}");
    }
    assert!(!out_dir.exists(), "no layout is written after a digest error");
    assert!(!cached.exists(), "the corrupted file leaves the cache");
}

#[test]
fn changed_pin_stops_the_build_after_download() {
    let (def, good) = busybox();
    let real = sha256sum(&good);
    let fake = "0".repeat(63) + "1";
    let tmp = tempfile::tempdir().unwrap();
    let pkg = scratch_package(tmp.path(), |t| t.replace(&def.debs[0].sha256, &fake));
    let cache = tmp.path().join("cache");
    let out_dir = tmp.path().join("out");
    let err = failed(&rpixen(&["pkg", "build", s(&pkg), "--cache", s(&cache), "-o", s(&out_dir)]));
    for needle in ["package busybox", "busybox-static_", "pkg.yml", fake.as_str(), real.as_str()] {
        assert!(err.contains(needle), "error lacks {needle:?}:\n{err}");
    }
    assert!(!out_dir.exists(), "no layout is written after a digest error");
    let kept: Vec<_> =
        std::fs::read_dir(cache.join("debs/sha256")).map(|d| d.count()).into_iter().collect();
    assert!(kept.iter().all(|n| *n == 0), "nothing enters the cache");
}

#[test]
fn version_no_longer_served_is_said_plainly() {
    let (def, _) = busybox();
    let old = &def.debs[0].version;
    let tmp = tempfile::tempdir().unwrap();
    let pkg = scratch_package(tmp.path(), |t| t.replace(&format!("\"{old}\""), "\"1:1.0.0-1\""));
    let cache = tmp.path().join("cache");
    let err = failed(&rpixen(&["pkg", "fetch", s(&pkg), "--cache", s(&cache)]));
    for needle in ["busybox-static", "1:1.0.0-1", "no longer served", "rpixen pkg update"] {
        assert!(err.contains(needle), "error lacks {needle:?}:\n{err}");
    }
}

#[test]
fn update_repins_to_the_archive_and_the_result_builds() {
    let (def, _) = busybox();
    let old = &def.debs[0];
    let stale_sha = "f".repeat(64);
    let tmp = tempfile::tempdir().unwrap();
    let pkg = scratch_package(tmp.path(), |t| {
        t.replace(&format!("\"{}\"", old.version), "\"1:1.0.0-1\"").replace(&old.sha256, &stale_sha)
    });
    let cache = tmp.path().join("cache");
    let err = ok(&rpixen(&["pkg", "update", s(&pkg), "--cache", s(&cache)]));
    assert!(err.contains("1:1.0.0-1 ->"), "{err}");
    let text = std::fs::read_to_string(pkg.join("pkg.yml")).unwrap();
    assert!(text.starts_with("# Debian's statically linked busybox"), "comments survive:\n{text}");
    let repinned = PkgDef::load(&pkg).unwrap();
    assert_ne!(repinned.debs[0].version, "1:1.0.0-1");
    assert_ne!(repinned.debs[0].sha256, stale_sha);
    // The new pin is what the archive serves: the download checks out against it and builds.
    let out_dir = tmp.path().join("out");
    ok(&rpixen(&["pkg", "build", s(&pkg), "--cache", s(&cache), "-o", s(&out_dir)]));
    let file = cache.join("debs/sha256").join(&repinned.debs[0].sha256);
    assert_eq!(sha256sum(&file), repinned.debs[0].sha256);
    assert!(out_dir.join("index.json").is_file());
}

#[test]
fn missing_build_script_is_said_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo/pkg/hypervisor");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(testkit::repo_root().join("pkg/hypervisor/pkg.yml"), dir.join("pkg.yml"))
        .unwrap();
    let out_dir = tmp.path().join("out");
    let err = failed(&rpixen(&["pkg", "build", s(&dir), "--offline", "-o", s(&out_dir)]));
    assert!(err.contains("package hypervisor") && err.contains("build.sh is missing"), "{err}");
    assert!(!out_dir.exists());
}
