//! Where U-Boot loads each file: the load-address plan, computed from the file sizes.
//!
//! ImageBuilder's rule, moved up past U-Boot's own areas: every blob starts on a 2 MiB boundary right
//! after the previous one (rounded up). The hypervisor, which `booti` runs in place, reserves its
//! Image-header `image_size` (it includes BSS) rather than its file size, so its BSS never covers the
//! Dom0 kernel that follows.
//!
//! ```text
//! RAM start                                   (virt 0x4000_0000, Pi 0x0)
//!   + 0 .. 256 MiB   U-Boot: firmware DTB, boot.scr at ${scriptaddr}, its kernel/ramdisk defaults
//!   + 256 MiB        second-stage script (2 MiB)
//!                    hypervisor (max(file, image_size)), Dom0 kernel, initrd,
//!                    each DomU's kernel and initrd (in manifest order), DTB (2 MiB reserve)
//!   limit            virt: RAM + 1 GiB; Pi: 768 MiB (QEMU raspi4b describes 960 MiB, U-Boot sits on top)
//! ```

use crate::manifest::BoardKind;

pub const ALIGN: u64 = 2 << 20;
/// Room kept for the device tree, which `fdt resize` grows.
pub const DTB_RESERVE: u64 = 2 << 20;
/// Room kept for the second-stage script.
pub const SCRIPT_RESERVE: u64 = 2 << 20;

/// The window of RAM the plan may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub limit: u64,
}

impl Window {
    pub fn for_board(kind: BoardKind) -> Window {
        match kind {
            BoardKind::QemuVirt => Window { base: 0x5000_0000, limit: 0x8000_0000 },
            // Everything Dom0 needs sits below 1 GiB on the Pi (and below QEMU raspi4b's 960 MiB).
            BoardKind::Rpi4 => Window { base: 0x1000_0000, limit: 0x3000_0000 },
        }
    }
}

/// Bytes each blob needs in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub hypervisor: u64,
    pub kernel: u64,
    pub initrd: u64,
}

/// Bytes one DomU's modules take (the hypervisor copies them into the DomU's own RAM, so the file
/// sizes are the footprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainSizes {
    pub kernel: u64,
    pub initrd: u64,
}

/// Where one DomU's modules are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainLoad {
    pub kernel: u64,
    pub initrd: u64,
}

/// Load addresses, each 2 MiB aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadPlan {
    pub script: u64,
    pub hypervisor: u64,
    pub kernel: u64,
    pub initrd: u64,
    pub dtb: u64,
    /// First byte past the DTB reserve.
    pub end: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "the boot files need {need} MiB from {base:#x}, but only {have} MiB fit below {limit:#x} on this board"
    )]
    TooLarge { need: u64, have: u64, base: u64, limit: u64 },
    #[error("{what} is not an arm64 Linux Image (no \"ARM\\x64\" magic at byte 56), so `booti` would refuse it")]
    NotArm64Image { what: String },
}

pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Lays the blobs out in ImageBuilder's order: script, hypervisor, kernel, initrd, DTB.
pub fn plan(window: Window, sizes: Sizes) -> Result<LoadPlan, LayoutError> {
    plan_with_domains(window, sizes, &[]).map(|(plan, _)| plan)
}

/// [`plan`] with each DomU's kernel and initrd between Dom0's initrd and the DTB, as ImageBuilder
/// orders them. Every blob starts on a 2 MiB boundary after the end of the one before, so no two
/// overlap.
pub fn plan_with_domains(
    window: Window,
    sizes: Sizes,
    domains: &[DomainSizes],
) -> Result<(LoadPlan, Vec<DomainLoad>), LayoutError> {
    let script = align_up(window.base, ALIGN);
    let hypervisor = align_up(script + SCRIPT_RESERVE, ALIGN);
    let kernel = align_up(hypervisor + sizes.hypervisor, ALIGN);
    let initrd = align_up(kernel + sizes.kernel, ALIGN);
    let mut next = align_up(initrd + sizes.initrd, ALIGN);
    let mut loads = Vec::with_capacity(domains.len());
    for d in domains {
        let kernel = next;
        let initrd = align_up(kernel + d.kernel, ALIGN);
        next = align_up(initrd + d.initrd, ALIGN);
        loads.push(DomainLoad { kernel, initrd });
    }
    let dtb = next;
    let end = dtb + DTB_RESERVE;
    if end > window.limit {
        return Err(LayoutError::TooLarge {
            need: (end - script) >> 20,
            have: (window.limit - script) >> 20,
            base: script,
            limit: window.limit,
        });
    }
    Ok((LoadPlan { script, hypervisor, kernel, initrd, dtb, end }, loads))
}

/// Memory an arm64 Image needs when run in place: `image_size` from its header (which covers BSS),
/// or the file size when that is larger or the field is 0 (pre-3.17 kernels).
pub fn arm64_image_footprint(what: &str, image: &[u8]) -> Result<u64, LayoutError> {
    if image.len() < 64 || image[56..60] != *b"ARM\x64" {
        return Err(LayoutError::NotArm64Image { what: what.to_owned() });
    }
    let image_size = u64::from_le_bytes(image[16..24].try_into().expect("8 bytes"));
    Ok(image_size.max(image.len() as u64))
}

/// Dom0's kernel: an arm64 Image, or a gzip-compressed one (Xen unpacks those itself, and they load
/// three times faster from the Pi's SD card).
pub fn check_dom0_kernel(what: &str, head: &[u8]) -> Result<(), LayoutError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(());
    }
    arm64_image_footprint(what, head).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn blobs_are_aligned_and_disjoint() {
        let w = Window::for_board(BoardKind::QemuVirt);
        let p = plan(w, Sizes { hypervisor: MIB + 1, kernel: 37 * MIB + 5, initrd: 3 }).unwrap();
        assert_eq!(p.script, 0x5000_0000);
        assert_eq!(p.hypervisor, 0x5020_0000);
        assert_eq!(p.kernel, 0x5040_0000);
        assert_eq!(p.initrd, p.kernel + 38 * MIB);
        assert_eq!(p.dtb, p.initrd + ALIGN);
        for a in [p.script, p.hypervisor, p.kernel, p.initrd, p.dtb] {
            assert_eq!(a % ALIGN, 0);
        }
    }

    #[test]
    fn domain_modules_sit_between_dom0_and_the_dtb() {
        let w = Window::for_board(BoardKind::QemuVirt);
        let sizes = Sizes { hypervisor: MIB, kernel: 11 * MIB + 7, initrd: 3 * MIB };
        let domains = [
            DomainSizes { kernel: 11 * MIB + 7, initrd: 2 * MIB + 1 },
            DomainSizes { kernel: 5 * MIB, initrd: ALIGN },
        ];
        let (p, d) = plan_with_domains(w, sizes, &domains).unwrap();
        assert_eq!(p, plan(w, sizes).map(|q| LoadPlan { dtb: p.dtb, end: p.end, ..q }).unwrap());
        // Every [start, start + size) is 2 MiB aligned and disjoint from every other, in order.
        let mut blobs = vec![
            (p.script, SCRIPT_RESERVE),
            (p.hypervisor, sizes.hypervisor),
            (p.kernel, sizes.kernel),
            (p.initrd, sizes.initrd),
        ];
        for (l, s) in d.iter().zip(&domains) {
            blobs.push((l.kernel, s.kernel));
            blobs.push((l.initrd, s.initrd));
        }
        blobs.push((p.dtb, DTB_RESERVE));
        for pair in blobs.windows(2) {
            let ((a, len), (b, _)) = (pair[0], pair[1]);
            assert_eq!(b % ALIGN, 0);
            assert!(a + len <= b, "{a:#x}+{len:#x} overlaps {b:#x}");
        }
        assert_eq!(d[0].kernel, align_up(p.initrd + sizes.initrd, ALIGN));
        assert_eq!(d[1].initrd + ALIGN, p.dtb);
        // Too many modules for the window is the same error as for Dom0's files.
        let big = vec![DomainSizes { kernel: 200 * MIB, initrd: 100 * MIB }; 3];
        assert!(matches!(plan_with_domains(w, sizes, &big), Err(LayoutError::TooLarge { .. })));
    }

    #[test]
    fn pi_stays_below_one_gib() {
        let w = Window::for_board(BoardKind::Rpi4);
        let p =
            plan(w, Sizes { hypervisor: 2 * MIB, kernel: 40 * MIB, initrd: 100 * MIB }).unwrap();
        assert!(p.end <= 0x4000_0000);
        let err = plan(w, Sizes { hypervisor: 2 * MIB, kernel: 40 * MIB, initrd: 600 * MIB })
            .unwrap_err();
        assert!(err.to_string().contains("only"), "{err}");
    }

    #[test]
    fn footprint_uses_image_size() {
        let mut img = vec![0u8; 4096];
        img[56..60].copy_from_slice(b"ARM\x64");
        img[16..24].copy_from_slice(&(3 * MIB).to_le_bytes());
        assert_eq!(arm64_image_footprint("x", &img), Ok(3 * MIB));
        assert_eq!(check_dom0_kernel("k", &img), Ok(()));
        assert_eq!(check_dom0_kernel("k", &[0x1f, 0x8b, 8, 0]), Ok(()));
        img[56] = 0;
        assert!(arm64_image_footprint("xen", &img).unwrap_err().to_string().contains("xen"));
        assert!(check_dom0_kernel("dom0.kernel", &img).is_err());
    }
}
