//! What a command says on stderr when it succeeds: status lines without terminal control characters
//! when stderr is not a terminal (a `docker run` or CI log), and nothing at all with `--quiet`.

use std::process::Command;

use rpixen::oci::layout::{Compression, ImageBuilder, LayerTar};

fn pull(tmp: &std::path::Path, quiet: bool) -> std::process::Output {
    let mut layer = LayerTar::new();
    layer.dir("etc", 0o755).file("etc/hostname", b"rpixen\n", 0o644);
    let layout = tmp.join("img");
    if !layout.exists() {
        ImageBuilder::new()
            .layer(&layer.finish(), Compression::Gzip)
            .unwrap()
            .write(&layout, "latest")
            .unwrap();
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_rpixen"));
    c.env("XDG_CACHE_HOME", tmp.join("xdg-cache")).env_remove("DOCKER_CONFIG");
    if quiet {
        c.arg("--quiet");
    }
    c.arg("pull").arg(format!("oci:{}", layout.display())).output().unwrap()
}

#[test]
fn status_lines_without_a_terminal_and_silence_with_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let o = pull(tmp.path(), false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("rpixen: pull: 1 layers")), "{stderr}");
    assert!(!stderr.contains(['\r', '\x1b']), "terminal control characters in a pipe: {stderr:?}");
    let digest_line = String::from_utf8_lossy(&o.stdout).lines().next().unwrap().to_owned();
    assert!(digest_line.contains("@sha256:"), "{digest_line}");

    let o = pull(tmp.path(), true);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "--quiet printed on stderr");
    // The data on stdout is not chatter: --quiet keeps it.
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next().unwrap(), digest_line);
}

/// `rpixen live` reports through the same reporter: its stages and the image's digest as status
/// lines, and nothing with `--quiet`, which changes no byte of the image.
#[test]
fn live_reports_its_stages_and_quiet_silences_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = crate::image_support::synthetic(tmp.path(), "");
    let live = |quiet: bool, out: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rpixen"));
        if quiet {
            c.arg("--quiet");
        }
        let o = c.arg("live").arg(&s.manifest).arg("--initrd").arg(&s.initrd).arg("-o").arg(out);
        let o = o.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let img = tmp.path().join("live.raw");
    let stderr = live(false, &img);
    for line in ["rpixen: boot FAT: ", "rpixen: image sha256:"] {
        assert!(stderr.lines().any(|l| l.starts_with(line)), "no {line:?} in {stderr}");
    }
    let quiet_img = tmp.path().join("quiet.raw");
    assert_eq!(live(true, &quiet_img), "", "--quiet printed on stderr");
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&quiet_img).unwrap());
}
