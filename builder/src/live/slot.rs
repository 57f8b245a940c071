//! A slot: everything above U-Boot and the GPU firmware (second stage, hypervisor, Dom0 kernel,
//! initrd, DTB, DomU files, and the squashfs rootfs when there is one), as one FAT volume the size
//! of the IMGA partition. The live image writes it into IMGA and IMGB; an update ships the same
//! bytes (the **slot image**) and the device writes them into its inactive slot. The FAT is U-Boot's
//! `load` format (Debian's U-Boot has no `sqfsload`), and identical for both slots: nothing in it
//! says which slot it is (`boot.scr` passes `rpixen.slot=` to Dom0).

use std::path::Path;

use super::{BootSet, Inputs, LiveError, NamedFile};
use crate::disk::fat::{self, Spec, Volume};
use crate::disk::output;
use crate::disk::source::{Shared, Source};
use crate::disk::{self, Chunk, Disk};
use crate::manifest::RootfsFormat;

/// The slot FAT's volume label (the same in IMGA and IMGB: a slot image is written to either).
pub const SLOT_LABEL: &str = "RPIXEN-SLOT";
/// The squashfs rootfs inside a slot (`rootfs.format: squashfs`).
pub const ROOTFS_NAME: &str = "rootfs.squashfs";

/// A slot's files: the boot set's loaded files, plus the squashfs rootfs when the manifest asks
/// for one.
pub fn slot_files(inputs: &Inputs<'_>, set: &BootSet) -> Result<Vec<NamedFile>, LiveError> {
    let mut files = set.loaded.clone();
    if inputs.plan.rootfs.format == RootfsFormat::Squashfs {
        let data = super::build_rootfs(inputs, RootfsFormat::Squashfs)?;
        files.push(NamedFile { name: ROOTFS_NAME.into(), data: Shared::new(Source::Memory(data)) });
    }
    Ok(files)
}

/// The slot size: a slot image must fit either slot partition.
pub fn slot_size(inputs: &Inputs<'_>) -> u64 {
    let p = &inputs.plan.partitions;
    p.imga.min(p.imgb).div_ceil(disk::assemble::MIB) * disk::assemble::MIB
}

/// The volume id of every slot FAT: fixed, so that two versions' slot images share their boot
/// sector's chunk (an update ships only chunks the device lacks); nothing looks a slot up by it.
pub const SLOT_VOLUME_ID: u32 = 0x5250_5853;

/// The slot's FAT volume.
pub fn slot_volume(
    inputs: &Inputs<'_>,
    files: &[NamedFile],
    size: u64,
) -> Result<Volume, LiveError> {
    Ok(fat::build(
        &Spec {
            label: SLOT_LABEL,
            size,
            // FAT32 from 33 MiB, as the boot partition; FAT16 below (U-Boot reads both).
            fat32: size >= 33 << 20,
            volume_id: SLOT_VOLUME_ID,
            epoch: inputs.epoch,
        },
        &super::entries(files),
    )?)
}

/// One slot image as a [`Disk`] without tables (the volume's chunks at their own offsets), for
/// the sparse writer and for `rpixen update build`.
pub fn slot_image(inputs: &Inputs<'_>) -> Result<Disk, LiveError> {
    let set = super::boot_set(inputs)?;
    let files = slot_files(inputs, &set)?;
    let size = slot_size(inputs);
    let (chunks, mapped) = disk::volume_chunks(slot_volume(inputs, &files, size)?);
    Ok(Disk {
        len: size,
        chunks: chunks.into_iter().filter(|c: &Chunk| !c.is_empty()).collect(),
        disk_guid: uuid::Uuid::nil(),
        parts: Vec::new(),
        mapped,
    })
}

/// Builds one slot image and writes it to `out` (sparse, atomically): the exact bytes of the IMGA
/// partition of the live image built from the same inputs. Returns its size in bytes.
pub fn build_slot_image(inputs: &Inputs<'_>, out: &Path) -> Result<u64, LiveError> {
    let image = slot_image(inputs)?;
    output::to_file(&image, out)?;
    Ok(image.len)
}
