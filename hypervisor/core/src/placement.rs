//! Where Dom0's memory goes (direct-mapped: IPA = PA) and where its kernel, device tree and initrd sit
//! inside it.

use crate::region::{align_down, align_up};
use crate::Region;

pub const SZ_2M: u64 = 2 << 20;

/// Picks the highest `size`-byte range, `align`-aligned, inside one RAM bank, below `limit` (boards whose
/// DMA masters reach only the first GiB pass `1 << 30`), avoiding every `busy` range (the hypervisor image,
/// the host DTB, boot modules, reserved memory, page 0).
pub fn place_dom0(
    ram: &[Region],
    busy: &[Region],
    size: u64,
    limit: u64,
    align: u64,
) -> Option<Region> {
    let mut banks: alloc::vec::Vec<Region> = ram.to_vec();
    crate::region::sort(&mut banks);
    for bank in banks.into_iter().rev() {
        let mut end = align_down(bank.end().min(limit), align);
        while end >= bank.base + size && end >= size {
            let cand = Region::new(end - size, size);
            if cand.base < bank.base {
                break;
            }
            match busy.iter().filter(|b| b.overlaps(&cand)).map(|b| b.base).min() {
                None => return Some(cand),
                Some(b) => end = align_down(b, align),
            }
        }
    }
    None
}

/// An arm64 Linux Image's `(text_offset, image_size)` from its 64-byte header (booting.rst), or
/// `None` without the `ARM\x64` magic (a gzip'd `vmlinuz`, say). `image_size` 0 is a pre-3.17
/// kernel: text offset 0x80000 and, as Linux documents, an unknown size (16 MiB assumed).
pub fn arm64_header(hdr: &[u8]) -> Option<(u64, u64)> {
    let rd64 = |o: usize| Some(u64::from_le_bytes(hdr.get(o..o + 8)?.try_into().ok()?));
    if hdr.get(56..60)? != b"ARM\x64" {
        return None;
    }
    Some(match rd64(16)? {
        0 => (0x80000, 16 << 20),
        size => (rd64(8)?, size),
    })
}

/// Where each Dom0 boot file goes inside Dom0's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dom0Layout {
    pub kernel: Region,
    pub dtb: Region,
    pub initrd: Option<Region>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The kernel, DTB and initrd do not fit in Dom0's memory.
    TooSmall,
}

/// The kernel at the start of Dom0 memory (+ `text_offset`), the DTB in the next 2 MiB block after
/// the kernel's `image_size` (booting.rst: 8-byte aligned, not sharing a 2 MiB block with the kernel),
/// the initrd after it.
pub fn layout(
    dom0: Region,
    text_offset: u64,
    image_size: u64,
    dtb_size: u64,
    initrd_size: Option<u64>,
) -> Result<Dom0Layout, LayoutError> {
    let kernel = Region::new(dom0.base + text_offset, image_size);
    let dtb = Region::new(align_up(kernel.end(), SZ_2M), dtb_size);
    let initrd = initrd_size.map(|s| Region::new(align_up(dtb.base + dtb_size.max(1), SZ_2M), s));
    let end = initrd.map_or(dtb.end(), |r| r.end());
    if end > dom0.end() {
        return Err(LayoutError::TooSmall);
    }
    Ok(Dom0Layout { kernel, dtb, initrd })
}

/// Dom0 memory laid around the kernel and initrd where the boot loader already put them, so that
/// neither is copied (37 MB of Debian kernel is most of the hypervisor's boot time under TCG).
/// Possible when the kernel sits at a 2 MiB boundary (+ `text_offset`), `size` bytes from there are
/// RAM below `limit` and free of `busy` (which must not list the modules themselves), and the initrd
/// lies inside, clear of the kernel's `image_size` and the DTB's 2 MiB slot after it.
#[allow(clippy::too_many_arguments)] // each is one fact about the boot; a struct would only rename them
pub fn layout_in_place(
    ram: &[Region],
    busy: &[Region],
    kernel: Region,
    text_offset: u64,
    image_size: u64,
    initrd: Option<Region>,
    size: u64,
    limit: u64,
) -> Option<(Region, Dom0Layout)> {
    let base = kernel.base.checked_sub(text_offset)?;
    if !base.is_multiple_of(SZ_2M) {
        return None;
    }
    let mem = Region::new(base, size);
    let in_ram = ram.iter().any(|b| b.base <= mem.base && mem.end() <= b.end());
    if !in_ram || mem.end() > limit || busy.iter().any(|b| b.overlaps(&mem)) {
        return None;
    }
    let kernel = Region::new(kernel.base, image_size.max(kernel.size));
    let dtb = Region::new(align_up(kernel.end(), SZ_2M), SZ_2M);
    if dtb.end() > mem.end() {
        return None;
    }
    if let Some(rd) = initrd {
        let head = Region::new(base, dtb.end() - base);
        if rd.base < mem.base || rd.end() > mem.end() || rd.overlaps(&head) {
            return None;
        }
    }
    Some((mem, Dom0Layout { kernel, dtb, initrd }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_header_fields_and_magic() {
        let mut h = [0u8; 64];
        h[56..60].copy_from_slice(b"ARM\x64");
        h[16..24].copy_from_slice(&(40u64 << 20).to_le_bytes());
        assert_eq!(arm64_header(&h), Some((0, 40 << 20)));
        h[16..24].fill(0);
        assert_eq!(arm64_header(&h), Some((0x80000, 16 << 20)), "pre-3.17: size unknown");
        h[0..2].copy_from_slice(&[0x1f, 0x8b]);
        h[56] = 0;
        assert_eq!(arm64_header(&h), None, "gzip");
        assert_eq!(arm64_header(&h[..40]), None, "short");
    }

    #[test]
    fn highest_free_range_in_ram() {
        let ram = [Region::new(0x4000_0000, 0x8000_0000)];
        // virt: the host DTB at the top of RAM (U-Boot moved it) pushes Dom0 below it.
        let busy = [Region::new(0x4060_0000, 0x20_0000), Region::new(0xbd53_e000, 0x10_0000)];
        assert_eq!(
            place_dom0(&ram, &busy, 512 << 20, u64::MAX, SZ_2M),
            Some(Region::new(0x9d40_0000, 0x2000_0000))
        );
    }

    #[test]
    fn pi_memory_stays_below_one_gib() {
        let ram = [Region::new(0, 0x3b40_0000), Region::new(0x4000_0000, 0xbc00_0000)];
        let busy = [
            Region::new(0, 0x1000),
            Region::new(0x60_0000, 0x20_0000),
            Region::new(0x800_0000, 0x1_0000),
        ];
        let r = place_dom0(&ram, &busy, 512 << 20, 1 << 30, SZ_2M).unwrap();
        assert!(r.end() <= 1 << 30 && !busy.iter().any(|b| b.overlaps(&r)));
        assert_eq!(r, Region::new(0x1b40_0000, 0x2000_0000));
        assert_eq!(place_dom0(&ram, &busy, 1 << 30, 1 << 30, SZ_2M), None);
    }

    #[test]
    fn in_place_when_the_loader_left_room() {
        let ram = [Region::new(0x4000_0000, 0x8000_0000)];
        let busy = [Region::new(0x5020_0000, 0x20_0000)]; // the hypervisor, just below the kernel
        let k = Region::new(0x5040_0000, 0x23F_C000);
        let rd = Some(Region::new(0x52C0_0000, 0x10_0000));
        let (mem, l) =
            layout_in_place(&ram, &busy, k, 0, 0x250_0000, rd, 512 << 20, u64::MAX).unwrap();
        assert_eq!(mem, Region::new(0x5040_0000, 0x2000_0000));
        assert_eq!(l.dtb, Region::new(0x52A0_0000, SZ_2M));
        assert_eq!(l.initrd, rd);
        // An initrd inside the DTB slot, an unaligned kernel, the hypervisor inside: no.
        assert!(layout_in_place(
            &ram,
            &busy,
            k,
            0,
            0x250_0000,
            Some(Region::new(0x52A0_0000, 0x1000)),
            512 << 20,
            u64::MAX
        )
        .is_none());
        assert!(layout_in_place(
            &ram,
            &busy,
            Region::new(0x5041_0000, 0x1000),
            0,
            0x250_0000,
            None,
            512 << 20,
            u64::MAX
        )
        .is_none());
        assert!(layout_in_place(
            &ram,
            &busy,
            Region::new(0x5000_0000, 0x1000),
            0,
            0x250_0000,
            None,
            512 << 20,
            u64::MAX
        )
        .is_none());
        // Not below the Pi's 1 GiB DMA limit: no.
        assert!(layout_in_place(&ram, &[], k, 0, 0x250_0000, None, 512 << 20, 1 << 30).is_none());
    }

    #[test]
    fn layout_keeps_files_apart() {
        let l =
            layout(Region::new(0x6000_0000, 0x2000_0000), 0, 0x250_0000, 0x1_0000, Some(0x80_0000))
                .unwrap();
        assert_eq!(l.kernel.base, 0x6000_0000);
        assert_eq!(l.dtb.base, 0x6260_0000);
        assert_eq!(l.initrd.unwrap().base, 0x6280_0000);
        assert_eq!(
            layout(Region::new(0, 0x100_0000), 0, 0x250_0000, 0x1000, None),
            Err(LayoutError::TooSmall)
        );
    }
}
