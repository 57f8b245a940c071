//! `installer.raw` (EVE's `installer_raw`): a disk that boots like the live image (same U-Boot,
//! scripts, hypervisor and Dom0 kernel) into an installer, and carries the live image as its
//! payload. For boards that install to internal storage (CM4 eMMC, NVMe, a second disk on `virt`).
//!
//! | # | name | content |
//! |---|---|---|
//! | 1 | BOOT | the boot FAT, whose initramfs runs dom0-init's `install` role as its one onboot step |
//! | 2 | CONFIG | the same CONFIG files as the live image's; the installer copies this partition to the target |
//! | 3 | INSTALLER | the live image, byte for byte from offset 0 |
//!
//! The installer's initramfs records the payload's size and sha256 in `/etc/rpixen/installer`, so
//! the device checks the payload before writing and verifies the target by reading it back. It also
//! lists the BOOT files a user edits on the flashed medium ([`CARRIED_BOOT_FILES`]): the installer
//! copies those it finds on its own BOOT FAT into the target's, so a `config.txt` edited or a NoCloud
//! `user-data` added (by rpi-imager, say) on the installer medium is what the installed system reads. The
//! medium has no PERSIST and no IMGA: nothing on it can be mistaken for an installed system.

use std::io::Write;

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::disk::fat::{self, Entry, Spec};
use crate::disk::ids::{ContentHash, Ids};
use crate::disk::source::{Shared, Source};
use crate::disk::{self, output, table, Disk, Partition};
use crate::live::{self, Inputs, LiveError, NamedFile, BOOT_LABEL, BOOT_SCRIPT, CONFIG_LABEL};
use crate::manifest::{FileContent, PlacedFile, Plan, RootfsFormat};
use crate::uboot::bootscript;
use crate::uboot::uimage::{self, ScriptImage};
use init_config::{InitConfig, Service};

/// Where the installer's initramfs describes the payload (dom0-init's `install::PAYLOAD_FILE`).
pub const PAYLOAD_FILE: &str = "/etc/rpixen/installer";
/// The payload partition's GPT name (dom0-init's `install::PAYLOAD_LABEL`).
pub const PAYLOAD_LABEL: &str = "INSTALLER";
/// The files of the installer medium's BOOT FAT that the installer carries onto the target's: the
/// Pi firmware's `config.txt` and cloud-init's NoCloud files, as rpi-imager writes them.
pub const CARRIED_BOOT_FILES: &[&str] = &["config.txt", "user-data", "network-config", "meta-data"];
/// Linux's generic data type: the payload is a raw disk image, not a filesystem anyone mounts.
const TYPE_PAYLOAD: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// What the installer does on the device, put on its Dom0 command line.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The disk to write (`vdb`, `nvme0n1`); default: the first that is not the installer medium.
    pub target: Option<String>,
    /// Overwrite a target that holds partitions or data.
    pub wipe: bool,
}

/// The Dom0 command line of the installer: the live one plus the installer's words.
pub fn installer_cmdline(live: &str, o: &InstallOptions) -> String {
    let mut words = vec![live.trim().to_owned(), "rpixen.installer".to_owned()];
    if let Some(t) = &o.target {
        words.push(format!("rpixen.install.target={t}"));
    }
    if o.wipe {
        words.push("rpixen.install.wipe".to_owned());
    }
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

/// The payload's description, as dom0-init's `install::plan::parse_payload` reads it.
pub fn payload_text(size: u64, sha256: &str) -> String {
    let mut text = format!("size {size}\nsha256 {sha256}\n");
    for name in CARRIED_BOOT_FILES {
        text.push_str(&format!("carry {name}\n"));
    }
    text
}

/// The installer's plan: the live plan's boot chain and rootfs layers, an initramfs (whatever the
/// live image's rootfs format), and an init that only runs the installer.
pub fn installer_plan(live: &Plan, o: &InstallOptions, size: u64, sha256: &str) -> Plan {
    let mut p = live.clone();
    p.dom0.cmdline = installer_cmdline(&live.dom0.cmdline, o);
    p.rootfs.format = RootfsFormat::Cpio;
    p.rootfs.files.retain(|f| f.path != PAYLOAD_FILE);
    p.rootfs.files.push(PlacedFile {
        path: PAYLOAD_FILE.to_owned(),
        content: FileContent::Inline(payload_text(size, sha256).into_bytes()),
        mode: 0o644,
    });
    p.init = InitConfig {
        hostname: live.init.hostname.clone(),
        modules: live.init.modules.clone(),
        console_shell: live.init.console_shell.clone(),
        onboot: vec![Service {
            name: "install".to_owned(),
            command: vec!["/proc/self/exe".to_owned(), "install".to_owned()],
            ..Service::default()
        }],
        ..InitConfig::default()
    };
    p
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sha256 of every byte of `disk`, zeros included (what the device reads back).
pub fn disk_sha256(disk: &Disk) -> std::io::Result<String> {
    let mut h = HashWriter(Sha256::new());
    output::stream(disk, &mut h)?;
    Ok(hex::encode(h.0.finalize()))
}

fn memory(name: &str, data: Vec<u8>) -> NamedFile {
    NamedFile { name: name.to_owned(), data: Shared::new(Source::Memory(data)) }
}

fn entries(v: &[NamedFile]) -> Vec<Entry<'_>> {
    v.iter().map(|f| Entry { path: &f.name, source: &f.data }).collect()
}

/// Builds the live image (`inputs`), then the installer disk that carries it.
pub fn installer(inputs: &Inputs<'_>, o: &InstallOptions) -> Result<Disk, LiveError> {
    let payload = live::live(inputs)?;
    let sha256 = disk_sha256(&payload).map_err(live::read_err("the live image it carries"))?;
    let plan = installer_plan(inputs.plan, o, payload.len, &sha256);
    let ins = Inputs { plan: &plan, seed: inputs.seed, initrd: None, epoch: inputs.epoch };
    let set = live::boot_set(&ins)?;
    let boot_scr = uimage::script(
        &ScriptImage { name: "rpixen boot", load: 0, entry: 0, time: inputs.epoch as u32 },
        bootscript::disk_boot(set.plan.script).as_bytes(),
    );
    let mut boot_files = vec![memory(BOOT_SCRIPT, boot_scr)];
    boot_files.extend(set.card);
    boot_files.extend(set.loaded);
    let mut config_files = Vec::new();
    for (i, f) in plan.config_files.iter().enumerate() {
        let data = match &f.content {
            FileContent::Inline(bytes) => bytes.clone(),
            FileContent::From(r) => live::files::read(r, &format!("config_files[{i}].source"))?,
        };
        config_files.push(memory(f.path.trim_start_matches('/'), data));
    }

    let mut hash = ContentHash::new();
    hash.add("epoch", &inputs.epoch.to_le_bytes());
    hash.add("payload sha256", sha256.as_bytes());
    for (dir, list) in [("boot", &boot_files), ("config", &config_files)] {
        for f in list.iter() {
            hash.add_source(&format!("{dir}/{}", f.name), &f.data)
                .map_err(live::read_err(&f.name))?;
        }
    }
    let ids = Ids::new(hash.finish(), inputs.seed);
    let p = &plan.partitions;
    let boot = fat::build(
        &Spec {
            label: BOOT_LABEL,
            size: p.boot,
            fat32: true,
            volume_id: ids.u32("boot volume id"),
            epoch: inputs.epoch,
        },
        &entries(&boot_files),
    )?;
    let config = fat::build(
        &Spec {
            label: CONFIG_LABEL,
            size: p.config,
            fat32: false,
            volume_id: ids.u32("config volume id"),
            epoch: inputs.epoch,
        },
        &entries(&config_files),
    )?;
    let guid = |s: &str| Uuid::parse_str(s).expect("valid type GUID constant");
    let payload_size = payload.len.div_ceil(disk::assemble::MIB) * disk::assemble::MIB;
    let (boot, boot_mapped) = disk::volume_chunks(boot);
    let (config, config_mapped) = disk::volume_chunks(config);
    Ok(disk::assemble(
        vec![
            Partition {
                name: "BOOT".into(),
                type_guid: guid(table::TYPE_EFI),
                size: p.boot,
                attrs: table::ATTR_LEGACY_BOOTABLE,
                content: boot,
                mapped: boot_mapped,
            },
            Partition {
                name: "CONFIG".into(),
                type_guid: guid(table::TYPE_CONFIG),
                size: p.config,
                attrs: 0,
                content: config,
                mapped: config_mapped,
            },
            Partition {
                name: PAYLOAD_LABEL.into(),
                type_guid: guid(TYPE_PAYLOAD),
                size: payload_size,
                attrs: 0,
                // The live image's chunks keep their offsets: the partition starts where it does.
                content: payload.chunks,
                // The live image's own block map, at the same offsets.
                mapped: payload.mapped,
            },
        ],
        &ids,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_carries_the_options() {
        let o = InstallOptions::default();
        assert_eq!(installer_cmdline("console=ttyAMA0 ", &o), "console=ttyAMA0 rpixen.installer");
        let o = InstallOptions { target: Some("nvme0n1".into()), wipe: true };
        assert_eq!(
            installer_cmdline("console=hvc0", &o),
            "console=hvc0 rpixen.installer rpixen.install.target=nvme0n1 rpixen.install.wipe"
        );
        assert_eq!(installer_cmdline("", &InstallOptions::default()), "rpixen.installer");
    }

    #[test]
    fn payload_text_is_what_the_device_parses() {
        assert_eq!(
            payload_text(1 << 20, "ab"),
            "size 1048576\nsha256 ab\ncarry config.txt\ncarry user-data\ncarry network-config\ncarry meta-data\n"
        );
    }
}
