//! `rpixen pull` and `rpixen rootfs` as a user runs them: a manifest naming a layout and a registry
//! image, files on top, init configuration and dom0-init placed; outputs read by cpio and unsquashfs.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{
    cpio_cat, cpio_list, fake_dom0_init, has, layered_image, line_for, manifest_with_rootfs,
    squashfs_list, Registry,
};
use rpixen::oci::layout::{Compression, ImageBuilder, LayerTar};
use rpixen::oci::registry::push_layout;

fn rpixen(tmp: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rpixen"));
    c.env("XDG_CACHE_HOME", tmp.join("xdg-cache"))
        .env("RPIXEN_PKG_DIR", tmp.join("pkg"))
        .env_remove("DOCKER_CONFIG");
    c
}

#[test]
fn rootfs_command_builds_both_formats_and_caches() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fake_dom0_init(&t.join("pkg"), "#!/bin/sh\necho fake init\n");
    let layout = t.join("layered");
    layered_image().write(&layout, "latest").unwrap();
    let r = format!("{}/test/layered:v1", reg.host());
    push_layout(&common::opts(t), &layout, "latest", &r).unwrap();
    let mut base = LayerTar::new();
    base.dir("bin", 0o755).file("bin/sh", b"not really a shell", 0o755).file(
        "etc/hostname",
        b"lower\n",
        0o644,
    );
    let base_dir = t.join("base");
    ImageBuilder::new()
        .layer(&base.finish(), Compression::Gzip)
        .unwrap()
        .write(&base_dir, "v2")
        .unwrap();
    std::fs::write(t.join("banner.txt"), "from the host\n").unwrap();
    let manifest = t.join("m.yml");
    std::fs::write(
        &manifest,
        manifest_with_rootfs(&format!(
            "rootfs:\n  format: cpio\n  images: [\"oci:{}:v2\", \"{r}\"]\n  files:\n    - {{path: /etc/hostname, contents: \"rpixen\\n\"}}\n    - {{path: /etc/banner, source: {{file: banner.txt}}, mode: \"0600\"}}\n",
            base_dir.display()
        )),
    )
    .unwrap();

    let out = t.join("out/rootfs.cpio.gz");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = rpixen(t).arg("rootfs").arg(&manifest).arg("-o").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("cpio: xattrs of `/bin/ping` dropped"), "{stderr}");
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
    let list = cpio_list(&out);
    assert!(line_for(&list, "init").starts_with("-rwxr-xr-x"), "{list}");
    assert_eq!(cpio_cat(&out, "init"), "#!/bin/sh\necho fake init\n");
    assert_eq!(cpio_cat(&out, "etc/hostname"), "rpixen\n");
    assert_eq!(cpio_cat(&out, "etc/banner"), "from the host\n");
    assert!(line_for(&list, "etc/banner").starts_with("-rw-------"), "{list}");
    assert!(cpio_cat(&out, "etc/rpixen/init.yml").contains("hostname: rpixen"));
    assert!(has(&list, "bin/sh") && has(&list, "dev/console") && has(&list, "etc/motd"), "{list}");

    // Unchanged inputs: served from the rootfs cache, byte-identical.
    let first = std::fs::read(&out).unwrap();
    let again = rpixen(t).arg("rootfs").arg(&manifest).arg("-o").arg(&out).output().unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("from the cache"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), first);

    // squashfs: dom0-init at /sbin/init.
    let sq = t.join("out/rootfs.squashfs");
    let o = rpixen(t)
        .arg("rootfs")
        .arg(&manifest)
        .arg("-o")
        .arg(&sq)
        .args(["--format", "squashfs"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("xattrs of `/bin/ping` dropped"));
    let list = squashfs_list(&sq);
    assert!(line_for(&list, "sbin/init").starts_with("-rwxr-xr-x 0/0"), "{list}");
    assert!(!has(&list, "init") || line_for(&list, "init").contains("sbin/init"), "{list}");

    // pull prints the digest and the layers.
    let o = testkit::run(rpixen(t).arg("pull").arg(&r));
    assert!(o.starts_with(&format!("{r}@sha256:")) && o.lines().count() == 4, "{o}");
}

#[test]
fn rootfs_errors_name_the_culprit_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fake_dom0_init(&t.join("pkg"), "#!/bin/sh\n");
    let manifest = t.join("m.yml");
    std::fs::write(
        &manifest,
        manifest_with_rootfs("rootfs:\n  format: cpio\n  images: [nosuchpackage]\n"),
    )
    .unwrap();
    let out = t.join("rootfs.cpio.gz");
    let o = rpixen(t).arg("rootfs").arg(&manifest).arg("-o").arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nosuchpackage"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(t).unwrap().count(), 2, "no temporary files left behind");

    std::fs::write(
        &manifest,
        manifest_with_rootfs("rootfs:\n  format: cpio\n  images: [dom0-init]\n  files:\n    - {path: /etc/x, source: {file: missing.txt}}\n"),
    )
    .unwrap();
    let o = rpixen(t).arg("rootfs").arg(&manifest).arg("-o").arg(&out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rootfs.files[0] (/etc/x)") && err.contains("missing.txt"), "{err}");
    assert!(!out.exists());

    // An unreachable registry, offline: the error says so.
    std::fs::write(
        &manifest,
        manifest_with_rootfs("rootfs:\n  format: cpio\n  images: [\"127.0.0.1:9/x/y:z\"]\n"),
    )
    .unwrap();
    let o = rpixen(t)
        .arg("rootfs")
        .arg(&manifest)
        .arg("-o")
        .arg(&out)
        .arg("--offline")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--offline"));
}
