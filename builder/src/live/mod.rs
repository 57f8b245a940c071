//! `live.raw` from a manifest: gather the boot files, plan the load addresses, write the scripts, and
//! lay out the GPT disk (boot FAT, IMGA, IMGB, CONFIG, PERSIST). Also the netboot TFTP root, which
//! shares everything but the first-stage script.

pub mod domains;
pub mod dtb;
pub mod files;
pub mod release;
pub mod slot;

use std::path::{Path, PathBuf};

use uuid::Uuid;

use self::dtb::DtbError;
use self::files::FileError;
use crate::disk::fat::{self, Entry, FatError, Spec};
use crate::disk::ids::{ContentHash, Ids};
use crate::disk::source::{Shared, Source};
use crate::disk::{self, table, Chunk, Disk, Partition};
use crate::manifest::{size_text, BoardKind, FileContent, HypervisorKind, Plan, RootfsFormat};
use crate::uboot::bootscript::{self, DomainNode, DtbSource, SecondStage, SECOND_STAGE};
use crate::uboot::configtxt::{self, UBOOT_NAME};
use crate::uboot::load::{self as layout, LayoutError, Sizes, Window};
use crate::uboot::uimage::{self, ScriptImage};
use rpixen_slot_state as slot_state;

pub const BOOT_SCRIPT: &str = "boot.scr";
pub const KERNEL_NAME: &str = "Image";
pub const INITRD_NAME: &str = "initrd.img";
pub const BOOT_LABEL: &str = "RPIXEN-BOOT";
pub const CONFIG_LABEL: &str = "CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Fat(#[from] FatError),
    #[error(transparent)]
    Dtb(#[from] DtbError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("`{field}`: {message}")]
    Field { field: String, message: String },
    #[error("cannot build Dom0's root filesystem (`rootfs:`)")]
    Rootfs(#[source] crate::rootfs::RootfsError),
    #[error("`domains[{index}].rootfs`: cannot build the domain's root filesystem")]
    DomainRootfs {
        index: usize,
        #[source]
        source: crate::rootfs::RootfsError,
    },
    #[error("a temporary file for a root filesystem")]
    RootfsTemp(#[source] std::io::Error),
    /// A file's bytes could not be read while the image was being put together.
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] crate::disk::output::OutputError),
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What `rpixen live` and `rpixen netboot` start from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The checked manifest.
    pub plan: &'a Plan,
    pub seed: Option<&'a str>,
    /// An initramfs to use instead of building one from `rootfs:`.
    pub initrd: Option<&'a Path>,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
}

/// A named file.
#[derive(Debug, Clone)]
pub struct NamedFile {
    pub name: String,
    pub data: Shared,
}

impl NamedFile {
    fn memory(name: impl Into<String>, data: Vec<u8>) -> NamedFile {
        NamedFile { name: name.into(), data: Shared::new(Source::Memory(data)) }
    }
}

/// Everything boot needs, before it is put on a FAT or in a TFTP root.
#[derive(Debug, Clone)]
pub struct BootSet {
    pub plan: layout::LoadPlan,
    /// What the second stage loads (hypervisor, kernel, initrd, and the DTB on the Pi) and the second
    /// stage itself.
    pub loaded: Vec<NamedFile>,
    /// What only the boot medium needs: config.txt, u-boot.bin, the Pi firmware.
    pub card: Vec<NamedFile>,
}

/// For `map_err` on reading a file's bytes: which file.
pub(crate) fn read_err(name: &str) -> impl FnOnce(std::io::Error) -> LiveError + '_ {
    move |source| LiveError::Read { name: name.to_owned(), source }
}

fn field(field: &str, message: impl Into<String>) -> LiveError {
    LiveError::Field { field: field.to_owned(), message: message.into() }
}

fn hypervisor_name(kind: HypervisorKind) -> &'static str {
    match kind {
        HypervisorKind::Xen => "xen",
        HypervisorKind::Rpixen => "rpixen-hv.bin",
    }
}

/// Runs the rootfs builder (`rootfs:` OCI layers + files + dom0-init) in `format`.
fn build_rootfs(inputs: &Inputs<'_>, format: RootfsFormat) -> Result<Vec<u8>, LiveError> {
    use std::io::{Read, Seek};
    let mut tmp = tempfile::tempfile().map_err(LiveError::RootfsTemp)?;
    let opts = crate::oci::OciOptions::from_env();
    let built =
        crate::rootfs::build(&opts, inputs.plan, format, &mut tmp).map_err(LiveError::Rootfs)?;
    report_rootfs("Dom0's rootfs", format, &built);
    let mut bytes = Vec::new();
    tmp.rewind().and_then(|_| tmp.read_to_end(&mut bytes)).map_err(LiveError::RootfsTemp)?;
    Ok(bytes)
}

/// The status line (and the warnings) of a root filesystem built for an image.
pub(crate) fn report_rootfs(what: &str, format: RootfsFormat, built: &crate::rootfs::BuildReport) {
    for w in &built.warnings {
        crate::report::warn(w);
    }
    crate::report::status(format_args!(
        "{what}: {} bytes ({format:?}{})",
        built.bytes,
        if built.cached { ", from the cache" } else { "" }
    ));
}

/// Dom0's initramfs: the `--initrd` file, or (for `rootfs.format: cpio`) one built from `rootfs:`.
fn initrd(inputs: &Inputs<'_>) -> Result<Shared, LiveError> {
    match (inputs.initrd, inputs.plan.rootfs.format) {
        (Some(p), _) => Ok(files::host(p, "--initrd")?),
        (None, RootfsFormat::Cpio) => Ok(Shared::new(Source::Memory(build_rootfs(inputs, RootfsFormat::Cpio)?))),
        (None, RootfsFormat::Squashfs) => Err(field(
            "rootfs.format",
            "squashfs puts the rootfs on IMGA; Dom0 then needs an initramfs that mounts it: pass --initrd FILE",
        )),
    }
}

/// Reads every input and writes the scripts.
pub fn boot_set(inputs: &Inputs<'_>) -> Result<BootSet, LiveError> {
    let m = inputs.plan;
    let hv = files::open(&m.hypervisor.binary, "hypervisor.binary")?;
    let kernel = files::open(&m.dom0.kernel, "dom0.kernel")?;
    let initrd = initrd(inputs)?;
    let head = |s: &Shared, field: &str| {
        s.head(64).map_err(read_err(&format!("`{field}`'s Image header")))
    };
    let hv_footprint =
        layout::arm64_image_footprint("hypervisor.binary", &head(&hv, "hypervisor.binary")?)?
            .max(hv.len());
    layout::check_dom0_kernel("dom0.kernel", &head(&kernel, "dom0.kernel")?)?;
    let mut domain_files = Vec::new();
    let domains = domains::gather(m, &kernel, &mut domain_files)?;
    let domain_sizes: Vec<_> = domains.iter().map(|d| d.sizes).collect();
    let (plan, domain_loads) = layout::plan_with_domains(
        Window::for_board(m.board.kind),
        Sizes { hypervisor: hv_footprint, kernel: kernel.len(), initrd: initrd.len() },
        m.dom0.memory,
        &domain_sizes,
    )?;
    domains::check_static_mem(m, &plan)?;

    let hv_name = hypervisor_name(m.hypervisor.kind);
    let mut loaded = Vec::new();
    let dtb_source = match &m.board.dtb {
        Some(r) => {
            let name = r.base_name();
            let raw = files::read(r, "board.dtb")?;
            let data = dtb::disable_nodes(&name, &raw, &m.board.dtb_disable)?;
            loaded.push(NamedFile::memory(name.clone(), data));
            DtbSource::File(name)
        }
        // The plan allows no DTB only on qemu-virt, whose firmware (QEMU) provides one.
        None => DtbSource::Firmware,
    };
    let hv_args = bootscript::hypervisor_args(&m.hypervisor.cmdline, &size_text(m.dom0.memory));
    let text = bootscript::second_stage(&SecondStage {
        plan,
        hypervisor_file: hv_name,
        kernel_file: KERNEL_NAME,
        initrd_file: INITRD_NAME,
        dtb: dtb_source,
        hypervisor_args: &hv_args,
        dom0_args: &m.dom0.cmdline,
        domains: m
            .domains
            .iter()
            .zip(&domains)
            .zip(domain_loads)
            .map(|((d, f), load)| DomainNode {
                name: &d.name,
                load,
                kernel_file: &f.kernel_name,
                initrd_file: &f.initrd_name,
                bootargs: &d.cmdline,
                memory: d.memory,
                cpus: d.cpus,
                vpl011: d.console,
                static_mem: d.static_mem.map(|s| (s.base, s.size)),
                passthrough: &d.passthrough,
            })
            .collect(),
    });
    let second = script_image("rpixen second stage", plan.script, &text, inputs.epoch);
    loaded.insert(0, NamedFile::memory(SECOND_STAGE, second));
    loaded.push(NamedFile { name: hv_name.into(), data: hv });
    loaded.push(NamedFile { name: KERNEL_NAME.into(), data: kernel });
    loaded.push(NamedFile { name: INITRD_NAME.into(), data: initrd });
    loaded.extend(domain_files);

    let mut card = Vec::new();
    if m.board.kind == BoardKind::Rpi4 {
        card.push(NamedFile::memory(
            "config.txt",
            configtxt::config_txt(&m.config_txt).into_bytes(),
        ));
    }
    card.push(NamedFile {
        name: UBOOT_NAME.into(),
        data: files::open(&m.board.uboot, "board.uboot")?,
    });
    for (i, f) in m.firmware.iter().enumerate() {
        let data = files::open(&f.source, &format!("firmware[{i}]"))?;
        card.push(NamedFile { name: f.dest.clone(), data });
    }
    Ok(BootSet { plan, loaded, card })
}

fn entries(v: &[NamedFile]) -> Vec<Entry<'_>> {
    v.iter().map(|f| Entry { path: &f.name, source: &f.data }).collect()
}

fn script_image(name: &str, addr: u64, text: &str, epoch: u64) -> Vec<u8> {
    let addr = u32::try_from(addr).expect("load plans stay below 4 GiB");
    uimage::script(
        &ScriptImage { name, load: addr, entry: addr, time: epoch as u32 },
        text.as_bytes(),
    )
}

/// Seconds of `dom0_watchdog=` on a slot's trial boot: the longest the hypervisor accepts, so a
/// slow first boot (a Pi 4 reaches Dom0's userspace, where `sp805_wdt` keeps it fed, in seconds)
/// is never cut short, and a hang still ends in a reset within a minute.
pub const TRIAL_WATCHDOG_SECS: u32 = 60;

/// Dom0's `watchdog.open_timeout=` on a trial boot: how long after `sp805_wdt` registers the
/// running SP805 Linux feeds it on userspace's behalf. The agent opens `/dev/watchdog` as soon as it
/// exists (seconds on a Pi 4, about a minute under QEMU's TCG on a loaded machine); a trial whose
/// userspace has not by then is reset. Generous, since a reset is a failed trial.
pub const TRIAL_WATCHDOG_OPEN_SECS: u32 = 180;

/// The partitions in table order (their numbers, which users know) and on the disk: STATE is entry
/// 6 but sits before PERSIST, which stays last so that the device can grow it to fill the card.
pub const PARTITION_NAMES: [&str; 6] = ["BOOT", "IMGA", "IMGB", "CONFIG", "PERSIST", "STATE"];
const DISK_ORDER: [usize; 6] = [0, 1, 2, 3, 5, 4];

/// `boot.scr` of an A/B disk.
fn slot_boot_script(m: &Plan, script: u64, epoch: u64) -> Vec<u8> {
    // Scratch for the slot chooser: the top of the second stage's 2 MiB reserve, which nothing
    // uses until `rpixen.scr` is loaded there (and the chooser is done by then).
    let scratch = script + layout::SCRIPT_RESERVE - slot_state::uboot::SCRATCH_LEN;
    let watchdog = match m.hypervisor.kind {
        HypervisorKind::Rpixen => Some(bootscript::TrialWatchdog {
            secs: TRIAL_WATCHDOG_SECS,
            open_timeout_secs: TRIAL_WATCHDOG_OPEN_SECS,
        }),
        // Xen has no hypervisor-run watchdog for Dom0 (its own is a hypercall Dom0 must arm).
        HypervisorKind::Xen => None,
    };
    script_image("rpixen boot", 0, &bootscript::slot_boot(script, scratch, watchdog), epoch)
}

/// Builds the whole disk.
pub fn live(inputs: &Inputs<'_>) -> Result<Disk, LiveError> {
    let m = inputs.plan;
    let set = boot_set(inputs)?;
    let slot_files = slot::slot_files(inputs, &set)?;
    let mut boot_files: Vec<NamedFile> =
        vec![NamedFile::memory(BOOT_SCRIPT, slot_boot_script(m, set.plan.script, inputs.epoch))];
    boot_files.extend(set.card);
    // The Pi firmware reads the DTB from the boot FAT and hands it to U-Boot; the slot has its own
    // copy for the hypervisor and Dom0, which an update replaces with the kernel's.
    if m.board.kind == BoardKind::Rpi4 {
        let dtb = m.board.dtb.as_ref().map(|d| d.base_name());
        boot_files.extend(slot_files.iter().filter(|f| Some(&f.name) == dtb.as_ref()).cloned());
    }

    let mut config_files = Vec::new();
    for (i, f) in m.config_files.iter().enumerate() {
        let data = match &f.content {
            FileContent::Inline(bytes) => bytes.clone(),
            FileContent::From(r) => files::read(r, &format!("config_files[{i}].source"))?,
        };
        config_files.push(NamedFile::memory(f.path.trim_start_matches('/'), data));
    }

    let p = &m.partitions;
    let sizes = [p.boot, p.imga, p.imgb, p.config, p.persist, slot_state::PARTITION_BYTES];
    let slot_size = slot::slot_size(inputs);

    // FAT volume ids come from SOURCE_DATE_EPOCH, the seed and the file list (names, sizes), so the
    // FAT layout does not wait for the content hash, which runs alongside it on another thread.
    let mut listing = ContentHash::new();
    listing.add("epoch", &inputs.epoch.to_le_bytes());
    for f in boot_files.iter().chain(&config_files) {
        listing.add(&f.name, &f.data.len().to_le_bytes());
    }
    let volume_ids = Ids::new(listing.finish(), inputs.seed);
    let content_hash = || -> Result<[u8; 32], LiveError> {
        let mut hash = ContentHash::new();
        hash.add("epoch", &inputs.epoch.to_le_bytes());
        for s in sizes {
            hash.add("size", &s.to_le_bytes());
        }
        for (dir, list) in [("boot", &boot_files), ("slot", &slot_files), ("config", &config_files)]
        {
            for f in list.iter() {
                hash.add_source(&format!("{dir}/{}", f.name), &f.data)
                    .map_err(read_err(&f.name))?;
            }
        }
        Ok(hash.finish())
    };
    let boot_spec = Spec {
        label: BOOT_LABEL,
        size: sizes[0],
        fat32: true,
        volume_id: volume_ids.u32("boot volume id"),
        epoch: inputs.epoch,
    };
    let config_spec = Spec {
        label: CONFIG_LABEL,
        size: sizes[3],
        fat32: false,
        volume_id: volume_ids.u32("config volume id"),
        epoch: inputs.epoch,
    };
    let (hash, boot, config, slot) = std::thread::scope(|scope| {
        let hasher = scope.spawn(content_hash);
        let boot = fat::build(&boot_spec, &entries(&boot_files));
        let config = fat::build(&config_spec, &entries(&config_files));
        let slot = slot::slot_volume(inputs, &slot_files, slot_size);
        (hasher.join().expect("the hash thread does not panic"), boot, config, slot)
    });
    let ids = Ids::new(hash?, inputs.seed);
    let (boot, config, slot) = (boot?, config?, slot?);
    let total = |files: &[NamedFile]| files.iter().map(|f| f.data.len()).sum::<u64>();
    crate::report::status(format_args!(
        "boot FAT: {} files, {} bytes; slot: {} files, {} bytes; CONFIG: {} files, {} bytes",
        boot_files.len(),
        total(&boot_files),
        slot_files.len(),
        total(&slot_files),
        config_files.len(),
        total(&config_files)
    ));

    let guid = |s: &str| Uuid::parse_str(s).expect("valid type GUID constant");
    let part = |name: &str, ty: &str, size: u64, attrs: u64, content: Vec<Chunk>| Partition {
        name: name.into(),
        type_guid: guid(ty),
        size,
        attrs,
        content,
        mapped: Vec::new(),
    };
    let fat_part = |name: &str, ty: &str, size: u64, attrs: u64, volume| {
        let (content, mapped) = disk::volume_chunks(volume);
        Partition { mapped, ..part(name, ty, size, attrs, content) }
    };
    // Both slots hold the same slot image, so a card whose IMGA is damaged still boots (from B);
    // the record says A `active`, B `unused` (an update overwrites B first).
    let state = slot_state::device::initial_copies()
        .into_iter()
        .map(|(offset, sector)| Chunk::bytes(offset, sector.to_vec()))
        .collect();
    let [n_boot, n_imga, n_imgb, n_config, n_persist, n_state] = PARTITION_NAMES;
    Ok(disk::assemble_in_order(
        vec![
            fat_part(n_boot, table::TYPE_EFI, sizes[0], table::ATTR_LEGACY_BOOTABLE, boot),
            fat_part(n_imga, table::TYPE_IMG, sizes[1], 0, slot.clone()),
            fat_part(n_imgb, table::TYPE_IMG, sizes[2], 0, slot),
            fat_part(n_config, table::TYPE_CONFIG, sizes[3], 0, config),
            part(n_persist, table::TYPE_PERSIST, sizes[4], 0, Vec::new()),
            part(n_state, table::TYPE_STATE, sizes[5], 0, state),
        ],
        &DISK_ORDER,
        &ids,
    )?)
}

/// Writes a netboot tree: `DIR/tftp/` (the TFTP root: second stage and the files it loads) and
/// `DIR/sdcard/` (the boot medium's files, with the `boot.scr` that fetches the rest over TFTP).
/// Returns the card's files, so a caller can also put them on a disk image.
pub fn netboot(
    inputs: &Inputs<'_>,
    server_ip: &str,
    ip_addr: Option<&str>,
    out: &Path,
) -> Result<Vec<NamedFile>, LiveError> {
    for (name, ip) in [("--serverip", Some(server_ip)), ("--ipaddr", ip_addr)] {
        if let Some(ip) = ip {
            ip.parse::<std::net::Ipv4Addr>()
                .map_err(|_| field(name, format!("`{ip}` is not an IPv4 address")))?;
        }
    }
    let set = boot_set(inputs)?;
    let boot_scr = script_image(
        "rpixen netboot",
        0,
        &bootscript::net_boot(set.plan.script, server_ip, ip_addr),
        inputs.epoch,
    );
    let mut card = vec![NamedFile::memory(BOOT_SCRIPT, boot_scr)];
    card.extend(set.card);
    let write = |sub: &str, files: &[NamedFile]| -> Result<(), LiveError> {
        let d = out.join(sub);
        let err = |source| LiveError::Write { path: d.clone(), source };
        std::fs::create_dir_all(&d).map_err(err)?;
        for f in files {
            let p = d.join(&f.name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            let werr = |source| LiveError::Write { path: p.clone(), source };
            let mut out = std::fs::File::create(&p).map_err(werr)?;
            f.data.copy_range(0, f.data.len(), &mut out).map_err(werr)?;
        }
        Ok(())
    };
    write("tftp", &set.loaded)?;
    write("sdcard", &card)?;
    Ok(card)
}

/// A small disk holding only a boot FAT with `files` (the netboot SD card).
pub fn card_disk(files_: &[NamedFile], seed: Option<&str>, epoch: u64) -> Result<Disk, LiveError> {
    let mut hash = ContentHash::new();
    hash.add("epoch", &epoch.to_le_bytes());
    for f in files_ {
        hash.add_source(&f.name, &f.data).map_err(read_err(&f.name))?;
    }
    let ids = Ids::new(hash.finish(), seed);
    let size = 64 << 20;
    let entries = entries(files_);
    let boot = fat::build(
        &Spec { label: BOOT_LABEL, size, fat32: true, volume_id: ids.u32("boot volume id"), epoch },
        &entries,
    )?;
    let (content, mapped) = disk::volume_chunks(boot);
    Ok(disk::assemble(
        vec![Partition {
            name: "BOOT".into(),
            type_guid: Uuid::parse_str(table::TYPE_EFI).expect("valid type GUID constant"),
            size,
            attrs: table::ATTR_LEGACY_BOOTABLE,
            content,
            mapped,
        }],
        &ids,
    )?)
}
