//! `board.dtb_disable`: the FDT rewriter checked with the device-tree compiler (`dtc`).

use std::process::Command;

use rpixen::live::dtb::disable_nodes;

fn dtc(args: &[&str], input: &std::path::Path) -> Vec<u8> {
    let out = Command::new("dtc").args(args).arg(input).output().unwrap();
    assert!(out.status.success(), "dtc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn decompile(dir: &std::path::Path, dtb: &[u8]) -> String {
    let p = dir.join("x.dtb");
    std::fs::write(&p, dtb).unwrap();
    String::from_utf8(dtc(&["-I", "dtb", "-O", "dts"], &p)).unwrap()
}

#[test]
fn disables_listed_nodes_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let dts = dir.path().join("t.dts");
    std::fs::write(
        &dts,
        r#"/dts-v1/;
/memreserve/ 0x1000 0x2000;
/ {
    compatible = "test";
    #address-cells = <1>;
    #size-cells = <1>;
    soc {
        hdmi@7ef00700 { compatible = "x"; reg = <0x7ef00700 0x100>; status = "okay"; };
        clock@7ef00000 { compatible = "y"; sub { a = <1>; }; };
        uart@1 { status = "okay"; };
    };
};
"#,
    )
    .unwrap();
    let dtb = dtc(&["-I", "dts", "-O", "dtb"], &dts);
    let patched = disable_nodes(
        "t.dtb",
        &dtb,
        &["/soc/hdmi@7ef00700".to_owned(), "/soc/clock@7ef00000".to_owned()],
    )
    .unwrap();
    let text = decompile(dir.path(), &patched);
    let node = |name: &str| {
        let s = text.find(name).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        text[s..].split("};").next().unwrap().to_owned()
    };
    assert!(node("hdmi@7ef00700").contains("status = \"disabled\""), "{text}");
    assert!(node("clock@7ef00000").contains("status = \"disabled\""), "{text}");
    assert!(node("uart@1").contains("status = \"okay\""), "{text}");
    assert!(text.contains("0x0000000000001000 0x0000000000002000;"), "{text}");
    assert!(text.contains("a = <0x01>;"), "{text}");

    let err = disable_nodes("t.dtb", &dtb, &["/soc/nope".to_owned()]).unwrap_err().to_string();
    assert!(err.contains("/soc/nope") && err.contains("t.dtb"), "{err}");
}

#[test]
fn patches_the_real_pi4_dtb() {
    let path = testkit::test_kernel_rpi4_dtb();
    let dtb = std::fs::read(&path).unwrap();
    let nodes: Vec<String> =
        ["/soc/hdmi@7ef00700", "/soc/i2c@7ef04500"].iter().map(|s| s.to_string()).collect();
    let patched = disable_nodes("pi.dtb", &dtb, &nodes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = decompile(dir.path(), &patched);
    let hdmi = &text[text.find("hdmi@7ef00700 {").unwrap()..];
    let hdmi = &hdmi[..hdmi.find("\n\t\t};").unwrap()];
    assert!(hdmi.contains("status = \"disabled\";"), "{hdmi}");
    // Nothing else changed: without status lines both trees decompile to the same text.
    let before = decompile(dir.path(), &dtb);
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("status = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&before), strip(&text));
    assert!(
        text.matches("status = \"disabled\"").count()
            > before.matches("status = \"disabled\"").count()
    );
}
