//! The static DomUs' boot files: each domain's kernel, and an initramfs built from its `rootfs:` by the
//! same pipeline as Dom0's (OCI layers, files, `init.yml`, `dom0-init` as `/init`). They go on the boot
//! FAT under `domains/<name>/`; a kernel that is the same file as Dom0's (or an earlier domain's) is
//! stored once. It is loaded once for all the DomUs that run it (they only read it), and apart from
//! Dom0's copy, which our hypervisor runs in place.

use crate::disk::source::{Shared, Source};
use crate::manifest::{Domain, FileSource, Plan, Rootfs};
use crate::uboot::load::{self as layout, DomainSizes, LoadPlan};

use super::{field, files, LiveError, NamedFile, KERNEL_NAME};

/// One DomU's files, named as the boot script loads them.
#[derive(Debug, Clone)]
pub struct DomainFiles {
    pub kernel_name: String,
    pub initrd_name: String,
    pub sizes: DomainSizes,
}

/// The folder a domain's own files sit in on the boot FAT (and in the TFTP root).
pub fn folder(name: &str) -> String {
    format!("domains/{name}")
}

/// The plan `rootfs::build` takes for a DomU: Dom0's, with the domain's rootfs and init in place.
fn domain_rootfs_plan(plan: &Plan, d: &Domain) -> Plan {
    Plan {
        rootfs: Rootfs {
            format: Domain::ROOTFS_FORMAT,
            images: d.images.clone(),
            files: d.files.clone(),
            // A DomU has no devices that need modules: its console (vpl011) is built in.
            modules: None,
        },
        init: d.init.clone(),
        ..plan.clone()
    }
}

fn build_initrd(plan: &Plan, index: usize, d: &Domain) -> Result<Vec<u8>, LiveError> {
    use std::io::{Read, Seek};
    let mut tmp = tempfile::tempfile().map_err(LiveError::RootfsTemp)?;
    let opts = crate::oci::OciOptions::from_env();
    let built =
        crate::rootfs::build(&opts, &domain_rootfs_plan(plan, d), Domain::ROOTFS_FORMAT, &mut tmp)
            .map_err(|source| LiveError::DomainRootfs { index, source })?;
    super::report_rootfs(&format!("domain {}'s rootfs", d.name), Domain::ROOTFS_FORMAT, &built);
    let mut bytes = Vec::new();
    tmp.rewind().and_then(|_| tmp.read_to_end(&mut bytes)).map_err(LiveError::RootfsTemp)?;
    Ok(bytes)
}

/// Reads and builds every domain's files. `loaded` receives the files the boot script loads (each
/// name once); the result lists, per domain, the names and sizes.
pub fn gather(
    plan: &Plan,
    dom0_kernel: &Shared,
    loaded: &mut Vec<NamedFile>,
) -> Result<Vec<DomainFiles>, LiveError> {
    // Kernels already placed: Dom0's first, so a DomU running the same kernel reuses `Image`.
    let mut kernels: Vec<(FileSource, String, u64)> =
        vec![(plan.dom0.kernel.clone(), KERNEL_NAME.to_owned(), dom0_kernel.len())];
    let mut out: Vec<DomainFiles> = Vec::new();
    for (i, d) in plan.domains.iter().enumerate() {
        let kernel_field = format!("domains[{i}].kernel");
        let (kernel_name, kernel_len) =
            match kernels.iter().find(|(source, _, _)| *source == d.kernel) {
                Some((_, name, len)) => (name.clone(), *len),
                None => {
                    let data = files::open(&d.kernel, &kernel_field)?;
                    let head = data
                        .head(64)
                        .map_err(super::read_err(&format!("`{kernel_field}`'s Image header")))?;
                    layout::check_dom0_kernel(&kernel_field, &head)?;
                    let name = format!("{}/{}", folder(&d.name), d.kernel.base_name());
                    let len = data.len();
                    loaded.push(NamedFile { name: name.clone(), data });
                    kernels.push((d.kernel.clone(), name.clone(), len));
                    (name, len)
                }
            };
        let initrd = build_initrd(plan, i, d)?;
        let initrd_name = format!("{}/initrd.img", folder(&d.name));
        let initrd_len = initrd.len() as u64;
        loaded.push(NamedFile {
            name: initrd_name.clone(),
            data: Shared::new(Source::Memory(initrd)),
        });
        // An earlier DomU loads the same kernel file: share its copy (never Dom0's, which runs in
        // place and so is no pristine copy).
        let kernel_of = out.iter().position(|o| o.kernel_name == kernel_name);
        out.push(DomainFiles {
            kernel_name,
            initrd_name,
            sizes: DomainSizes { kernel: kernel_len, initrd: initrd_len, kernel_of },
        });
    }
    Ok(out)
}

/// A DomU's static memory must not cover the boot files U-Boot loads: the hypervisor reads its modules
/// from there before it hands the range to the domain.
pub fn check_static_mem(plan: &Plan, load: &LoadPlan) -> Result<(), LiveError> {
    for (i, d) in plan.domains.iter().enumerate() {
        if let Some(s) = d.static_mem {
            if s.base < load.end && load.script < s.base + s.size {
                return Err(field(
                    &format!("domains[{i}].static_mem"),
                    format!(
                        "{:#x}..{:#x} overlaps the boot files U-Boot loads at {:#x}..{:#x}",
                        s.base,
                        s.base + s.size,
                        load.script,
                        load.end
                    ),
                ));
            }
        }
    }
    Ok(())
}
