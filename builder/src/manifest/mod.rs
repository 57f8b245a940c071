//! The image manifest: read once ([`load`]), checked once, and handed on as a typed [`Plan`].
//!
//! - [`schema`]: what the YAML may contain (serde types, unknown keys rejected).
//! - [`plan`]: the checked result: sizes in bytes, files as [`FileSource`]s, modes as numbers.

pub mod domains;
pub mod plan;
pub mod schema;

use std::path::{Path, PathBuf};

pub use domains::{BoardResources, Domain, StaticMem};
/// The `init:` section is the file `dom0-init` reads (`/etc/rpixen/init.yml`); its types live in the
/// `init-config` crate so the builder and PID 1 agree on every field.
pub use init_config::{Backoff, InitConfig, Mount as InitMount, Restart, Service};
pub use plan::{
    parse_size, size_text, Board, BoardKind, BootFile, Dom0, FileContent, FileSource, Hypervisor,
    HypervisorKind, ModuleSet, Partitions, PlacedFile, Plan, Rootfs, RootfsFormat,
};

/// Errors from reading a manifest. Each names the file and, where known, the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read image manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image manifest {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("image manifest {path}: field `{field}`: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// Reads and checks a manifest file; host files it names are relative to its folder.
pub fn load(path: &Path) -> Result<Plan, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse(&text, path, base)
}

/// Parses and checks manifest text; `path` names the file in errors, `base` resolves host files.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Plan, ManifestError> {
    let manifest: schema::Manifest = serde_norway::from_str(text)
        .map_err(|source| ManifestError::Parse { path: path.to_owned(), source })?;
    Plan::from_manifest(&manifest, base).map_err(|e| ManifestError::Invalid {
        path: path.to_owned(),
        field: e.field,
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images")
    }

    fn qemu_virt() -> String {
        std::fs::read_to_string(images().join("qemu-virt.yml")).unwrap()
    }

    /// The error and its causes, as the command line prints them.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    }

    fn parse_err(text: &str) -> String {
        chain(&parse(text, Path::new("x.yml"), Path::new("/m")).unwrap_err())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(size_text(512 << 20), "512M");
        assert_eq!(size_text(1 << 30), "1G");
        assert_eq!(size_text(1536 << 20), "1536M");
        assert_eq!(size_text(4097), "4097");
    }

    #[test]
    fn board_manifests_become_plans() {
        for name in [
            "rpi4.yml",
            "rpi4-qemu.yml",
            "qemu-virt.yml",
            "qemu-virt-xen.yml",
            "qemu-virt-domus.yml",
            "qemu-virt-xen-domus.yml",
        ] {
            let plan = load(&images().join(name)).unwrap();
            assert!(!plan.rootfs.images.is_empty(), "{name}");
            assert_eq!(plan.dom0.memory, 512 << 20, "{name}");
            assert!(plan.partitions.boot >= plan::MIN_BOOT_SIZE, "{name}");
        }
    }

    #[test]
    fn host_files_resolve_against_the_manifest_folder() {
        let text = qemu_virt()
            + "config_files:\n  - {path: /etc/x, source: {file: x.txt}, mode: \"0600\"}\n";
        let plan = parse(&text, Path::new("x.yml"), Path::new("/m")).unwrap();
        let f = plan.config_files.iter().find(|f| f.path == "/etc/x").unwrap();
        assert_eq!(f.content, FileContent::From(FileSource::Host("/m/x.txt".into())));
        assert_eq!(f.mode, 0o600);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_err(&qemu_virt().replace("dom0:\n", "dom0:\n  colour: blue\n"));
        assert!(err.contains("x.yml") && err.contains("colour"), "{err}");
    }

    /// `qemu-virt.yml` with its whole `init:` section replaced by `init` (YAML, indented).
    fn with_init(init: &str) -> String {
        let text = qemu_virt();
        let start = text.find("\ninit:\n").unwrap() + 1;
        let end = start + text[start..].find("\npartitions:").unwrap() + 1;
        format!("{}init:\n{init}{}", &text[..start], &text[end..])
    }

    #[test]
    fn init_section_uses_init_config() {
        // The board image's own roles (nocloud, network, sshd) and the update agent are init-config
        // services.
        let m = parse(&qemu_virt(), Path::new("x.yml"), Path::new(".")).unwrap();
        let names: Vec<&str> = m.init.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["network", "sshd", "agent"]);
        assert_eq!(m.init.onboot[0].argv(), ["/proc/self/exe", "nocloud"]);
        let good =
            with_init("  services:\n    - {name: web, command: [httpd], restart: on-failure}\n");
        let m = parse(&good, Path::new("x.yml"), Path::new(".")).unwrap();
        assert_eq!(m.init.services.len(), 1);
        assert_eq!(m.init.services[0].restart(), Restart::OnFailure);
        let err = parse_err(&with_init("  services:\n    - {name: web, command: []}\n"));
        assert!(err.contains("init.services[0].command"), "{err}");
    }

    #[test]
    fn rootfs_modules_default_to_the_kernel_image() {
        let m = parse(&qemu_virt(), Path::new("x.yml"), Path::new(".")).unwrap();
        assert_eq!(m.rootfs.modules, Some(ModuleSet { image: "kernel".into(), add: vec![] }));
        let text = qemu_virt().replace("modules: {image: kernel}", "modules: {add: [zram]}");
        let m = parse(&text, Path::new("x.yml"), Path::new(".")).unwrap();
        assert_eq!(
            m.rootfs.modules,
            Some(ModuleSet { image: "kernel".into(), add: vec!["zram".into()] })
        );
        let none = qemu_virt().replace("  modules: {image: kernel}\n", "");
        assert_eq!(parse(&none, Path::new("x.yml"), Path::new(".")).unwrap().rootfs.modules, None);
        // A host-file kernel says nothing about where its modules are.
        let host = qemu_virt()
            .replace("kernel: {image: kernel, path: boot/Image}", "kernel: {file: Image}")
            .replace("modules: {image: kernel}", "modules: {add: [zram]}");
        let err = parse_err(&host);
        assert!(err.contains("rootfs.modules.image"), "{err}");
        let err = parse_err(&qemu_virt().replace("{image: kernel}\n", "{add: [zram.ko]}\n"));
        assert!(err.contains("rootfs.modules.add[0]") && err.contains("zram.ko"), "{err}");
        let err = parse_err(&qemu_virt().replace("{image: kernel}\n", "{set: [zram]}\n"));
        assert!(err.contains("set"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        let text = qemu_virt();
        for (from, to, field) in [
            ("memory: 512M", "memory: lots", "dom0.memory"),
            ("boot: 64M", "boot: 16M", "partitions.boot"),
            ("imga: ", "imga: 3X #", "partitions.imga"),
            ("kind: qemu-virt", "kind: qemu-virt\n  dtb_disable: [/soc]", "board.dtb_disable"),
        ] {
            assert!(text.contains(from), "{from}");
            let err = parse_err(&text.replacen(from, to, 1));
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    fn domus() -> String {
        std::fs::read_to_string(images().join("qemu-virt-xen-domus.yml")).unwrap()
    }

    #[test]
    fn domains_become_typed() {
        let plan = parse(&domus(), Path::new("x.yml"), Path::new("/m")).unwrap();
        assert_eq!(plan.domains.len(), 2);
        let d = &plan.domains[1];
        assert_eq!(d.name, "edge2");
        assert_eq!(d.memory, 256 << 20);
        assert_eq!(d.cpus, 1);
        assert!(d.console);
        assert_eq!(d.static_mem, None);
        assert_eq!(
            d.kernel,
            FileSource::InImage { image: "kernel".into(), path: "boot/Image".into() }
        );
        assert_eq!(d.images, ["busybox", "dom0-init"]);
        assert_eq!(d.files[0].path, "/etc/hostname");
        assert_eq!(d.init.hostname.as_deref(), Some("edge2"));
        assert_eq!(
            plan.board.resources,
            BoardResources { cpus: 4, ram_base: 1 << 30, ram_size: 2 << 30 }
        );
        // The two images differ only in the hypervisor.
        let ours = load(&images().join("qemu-virt-domus.yml")).unwrap();
        assert_eq!(ours.domains, plan.domains);
        assert_eq!(ours.dom0, plan.dom0);
        assert_eq!(ours.hypervisor.cmdline, plan.hypervisor.cmdline);
        assert_ne!(ours.hypervisor.kind, plan.hypervisor.kind);
    }

    #[test]
    fn static_mem_and_passthrough() {
        let text = domus().replacen(
            "    console: true\n",
            "    console: true\n    static_mem: {base: 0x60000000, size: 256M}\n    passthrough: [/soc/serial@9000000]\n",
            1,
        );
        let plan = parse(&text, Path::new("x.yml"), Path::new("/m")).unwrap();
        assert_eq!(
            plan.domains[0].static_mem,
            Some(StaticMem { base: 0x6000_0000, size: 256 << 20 })
        );
        assert_eq!(plan.domains[0].passthrough, ["/soc/serial@9000000"]);
        assert_eq!(plan.domains[1].static_mem, None);
    }

    #[test]
    fn impossible_domains_are_named() {
        let text = domus();
        let second = text.rfind("    cpus: 1").unwrap();
        let with_second = |from: &str, to: &str| {
            let at = second + text[second..].find(from).unwrap_or_else(|| panic!("{from}"));
            format!("{}{to}{}", &text[..at], &text[at + from.len()..])
        };
        let edge2_memory = text.rfind("    memory: 256M").unwrap();
        for (bad, field, words) in [
            // Dom0 keeps 2 of 4 CPUs and edge1 takes 1: one is left.
            (with_second("cpus: 1", "cpus: 2"), "domains[1].cpus", "1 are free"),
            (with_second("cpus: 1", "cpus: 0"), "domains[1].cpus", "at least one"),
            (
                format!("{}    memory: 1500M{}", &text[..edge2_memory], &text[edge2_memory + 16..]),
                "domains[1].memory",
                "does not fit",
            ),
            (text.replacen("name: edge2", "name: edge1", 1), "domains[1].name", "twice"),
            (text.replacen("name: edge1", "name: dom0", 1), "domains[0].name", "Dom0"),
            (text.replacen("name: edge1", "name: \"a b\"", 1), "domains[0].name", "node name"),
            (text.replacen("memory: 256M", "memory: 256Q", 1), "domains[0].memory", "unit"),
            (
                text.replacen("    console: true\n", "    console: true\n    colour: red\n", 1),
                "colour",
                "unknown field",
            ),
            (
                text.replacen(
                    "    console: true\n",
                    "    console: true\n    static_mem: {base: 0x60000000, size: 128M}\n",
                    1,
                ),
                "domains[0].static_mem.size",
                "must equal",
            ),
            (
                text.replacen(
                    "    console: true\n",
                    "    console: true\n    static_mem: {base: 0x60100000, size: 256M}\n",
                    1,
                ),
                "domains[0].static_mem",
                "2M",
            ),
            (
                text.replacen(
                    "    console: true\n",
                    "    console: true\n    static_mem: {base: 0xb8000000, size: 256M}\n",
                    1,
                ),
                "domains[0].static_mem.base",
                "inside the board's RAM",
            ),
            (
                text.replace(
                    "    console: true\n",
                    "    console: true\n    static_mem: {base: 0x60000000, size: 256M}\n",
                ),
                "domains[1].static_mem.base",
                "overlaps domain `edge1`",
            ),
            (
                text.replacen(
                    "    console: true\n",
                    "    console: true\n    passthrough: [soc/x]\n",
                    1,
                ),
                "domains[0].passthrough[0]",
                "absolute",
            ),
            (
                text.replace("dom0_max_vcpus=2", "dom0_max_vcpus=4"),
                "hypervisor.cmdline",
                "lower dom0_max_vcpus",
            ),
            (
                text.replacen("      images: [busybox, dom0-init]\n", "      images: []\n", 1),
                "domains[0].rootfs.images",
                "at least one",
            ),
        ] {
            let err = parse_err(&bad);
            assert!(err.contains(field) && err.contains(words), "{field} / {words}: {err}");
        }
        // The board's own size moves the limits.
        let small = text.replace("  memory: 2G\n", "  memory: 1G\n");
        let err = parse_err(&small);
        assert!(err.contains("domains[1].memory") && err.contains("board has 1G"), "{err}");
    }

    #[test]
    fn dom0_cpus_from_the_command_line() {
        assert_eq!(domains::dom0_cpus("console=dtuart"), Ok(1));
        assert_eq!(domains::dom0_cpus("dom0_max_vcpus=2 x"), Ok(2));
        assert_eq!(domains::dom0_cpus("dom0_max_vcpus=1-3"), Ok(3));
        assert!(domains::dom0_cpus("dom0_max_vcpus=x").is_err());
    }
}
