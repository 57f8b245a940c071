//! What a user sees when a command fails: the error and each of its causes exactly once (`rpixen:
//! error: ...`, then `  caused by: ...` lines), naming the file or digest at fault, and a non-zero exit.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{fake_dom0_init, manifest_with_rootfs};
use rpixen::oci::layout::{Compression, ImageBuilder};

fn rpixen(tmp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rpixen"));
    c.env("XDG_CACHE_HOME", tmp.join("xdg-cache"))
        .env("RPIXEN_PKG_DIR", tmp.join("pkg"))
        .env_remove("DOCKER_CONFIG");
    c
}

/// The error lines without their prefixes, after checking the layout of the report.
fn error_lines(o: &Output) -> Vec<String> {
    assert!(!o.status.success(), "the command succeeded");
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let top = stderr.lines().position(|l| l.starts_with("rpixen: error: ")).unwrap_or_else(|| {
        panic!("no `rpixen: error:` line in:\n{stderr}");
    });
    let mut lines = vec![stderr.lines().nth(top).unwrap()["rpixen: error: ".len()..].to_owned()];
    for l in stderr.lines().skip(top + 1) {
        let cause = l.strip_prefix("  caused by: ").unwrap_or_else(|| {
            panic!("unexpected line after the error: `{l}` in:\n{stderr}");
        });
        lines.push(cause.to_owned());
    }
    // No layer repeats another: a cause's text appears in no other line.
    for (i, a) in lines.iter().enumerate() {
        for (j, b) in lines.iter().enumerate() {
            assert!(i == j || !b.contains(a.as_str()), "`{a}` is repeated in `{b}`:\n{stderr}");
        }
    }
    lines
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn corrupt_layer_names_image_and_digest_and_each_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fake_dom0_init(&t.join("pkg"), "#!/bin/sh\n");
    // A well-formed gzip blob whose content is not a tar archive: the digests all match.
    let junk = vec![0x5au8; 4096];
    let layout = t.join("junk");
    ImageBuilder::new().layer(&junk, Compression::Gzip).unwrap().write(&layout, "latest").unwrap();
    let image = rpixen::oci::resolve(&crate::common::opts(t), &format!("oci:{}", layout.display()))
        .unwrap();
    let layer = image.layers[0].descriptor.digest().to_string();
    let manifest = t.join("m.yml");
    std::fs::write(
        &manifest,
        manifest_with_rootfs(&format!(
            "rootfs:\n  format: cpio\n  images: [\"oci:{}\"]\n",
            layout.display()
        )),
    )
    .unwrap();
    let out = t.join("rootfs.cpio.gz");
    let o = rpixen(t).arg("rootfs").arg(&manifest).arg("-o").arg(&out).output().unwrap();
    let lines = error_lines(&o);
    let all = lines.join("\n");
    assert!(lines.len() >= 2, "no cause below the error: {all}");
    assert!(lines[0].contains(&layer), "the top line names the layer digest: {all}");
    assert_eq!(count(&all, &layer), 1, "{all}");
    assert!(count(&all, "tar") >= 1, "a cause says the tar is bad: {all}");
    assert!(!out.exists(), "nothing half written");
}

#[test]
fn bad_package_definition_names_file_and_field_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("pkgsrc/bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pkg.yml"),
        "description: x\ncolour: blue\nbuild:\n  script: build.sh\n  output: bin/x\n",
    )
    .unwrap();
    let o = rpixen(t).args(["pkg", "build"]).arg(&dir).output().unwrap();
    let lines = error_lines(&o);
    let all = lines.join("\n");
    assert!(lines[0].contains("pkg.yml"), "the top line names the file: {all}");
    assert!(lines.len() >= 2, "no cause below the error: {all}");
    assert_eq!(count(&all, "colour"), 1, "{all}");
    assert!(!t.join("dist/pkg/bad").exists(), "no package written");
}

#[test]
fn live_names_the_rootfs_file_and_keeps_the_io_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fake_dom0_init(&t.join("pkg"), "#!/bin/sh\n");
    let s = crate::image_support::synthetic(t, "");
    let text = std::fs::read_to_string(&s.manifest).unwrap().replace(
        "  images: [busybox]\n",
        "  images: [dom0-init]\n  files:\n    - {path: /etc/x, source: {file: missing.txt}}\n",
    );
    std::fs::write(&s.manifest, text).unwrap();
    let out = t.join("live.raw");
    let o = rpixen(t).arg("live").arg(&s.manifest).arg("-o").arg(&out).output().unwrap();
    let lines = error_lines(&o);
    let all = lines.join("\n");
    assert_eq!(lines.len(), 5, "{all}");
    assert!(lines[0].contains("m.yml"), "the top line names the manifest: {all}");
    assert!(lines[1].contains("rootfs"), "{all}");
    assert!(lines[2].starts_with("rootfs.files[0] (/etc/x)"), "{all}");
    assert_eq!(count(&all, "missing.txt"), 1, "{all}");
    assert!(lines[4].contains("No such file"), "the OS error is kept as the last cause: {all}");
    assert!(!out.exists(), "nothing half written");
}

#[test]
fn inspect_of_a_disk_without_a_gpt_names_the_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("blank.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let o = rpixen(tmp.path()).arg("inspect").arg(&disk).output().unwrap();
    let lines = error_lines(&o);
    let all = lines.join("\n");
    assert!(lines[0].contains("blank.raw") && lines[0].contains("partition table"), "{all}");
    assert!(lines.len() >= 2, "the GPT reader's own error is kept below: {all}");
    assert_eq!(count(&all, "blank.raw"), 1, "{all}");
}
