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
//!   Dom0 kernel      (with DomUs, when they fit:) past the kernel + dom0_mem
//!     + dom0_mem     each DomU's kernel and initrd (in manifest order; a kernel file an earlier DomU
//!                    runs too is loaded once), DTB (2 MiB reserve)
//!   limit            virt: RAM + 1 GiB; Pi: 768 MiB (QEMU raspi4b describes 960 MiB, U-Boot sits on top)
//! ```
//!
//! Why DomU modules go past `dom0_mem`: the rpixen hypervisor runs Dom0's kernel where U-Boot put it
//! and lays Dom0's RAM from there, which it can only do when those `dom0_mem` bytes hold nothing that
//! must outlive Dom0's start. The DomUs' modules (the pristine copies a DomU restarts from) and the
//! device tree (whose strings name the domains) must; inside that window they force the hypervisor to
//! copy Dom0's kernel to RAM of its own. Xen copies every kernel anyway, so the order costs it nothing.

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
    /// The earlier DomU (index) whose kernel is the same file: this one's is not loaded again but
    /// shares that copy. Both hypervisors only read a DomU kernel module (they copy it into the
    /// domain's RAM), and Xen's boot-module list merges modules of one kind at one address.
    pub kernel_of: Option<usize>,
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
    plan_with_domains(window, sizes, 0, &[]).map(|(plan, _)| plan)
}

/// [`plan`] with each DomU's kernel and initrd after Dom0's files, then the DTB, as ImageBuilder
/// orders them: past Dom0's kernel + `dom0_memory` when they fit there (see the module comment),
/// else right after Dom0's initrd. Every blob starts on a 2 MiB boundary after the end of the one
/// before, so no two overlap; a DomU kernel shared with an earlier DomU (`kernel_of`) takes no room.
pub fn plan_with_domains(
    window: Window,
    sizes: Sizes,
    dom0_memory: u64,
    domains: &[DomainSizes],
) -> Result<(LoadPlan, Vec<DomainLoad>), LayoutError> {
    let script = align_up(window.base, ALIGN);
    let hypervisor = align_up(script + SCRIPT_RESERVE, ALIGN);
    let kernel = align_up(hypervisor + sizes.hypervisor, ALIGN);
    let initrd = align_up(kernel + sizes.kernel, ALIGN);
    let after_dom0 = align_up(initrd + sizes.initrd, ALIGN);
    let past_window = align_up(kernel + dom0_memory, ALIGN).max(after_dom0);
    let starts: &[u64] =
        if domains.is_empty() { &[after_dom0] } else { &[past_window, after_dom0] };
    let mut planned = None;
    for &start in starts {
        let (loads, dtb) = domain_loads(start, domains);
        if dtb + DTB_RESERVE <= window.limit {
            planned = Some((loads, dtb));
            break;
        }
    }
    let Some((loads, dtb)) = planned else {
        let (_, dtb) = domain_loads(after_dom0, domains);
        return Err(LayoutError::TooLarge {
            need: (dtb + DTB_RESERVE - script) >> 20,
            have: (window.limit - script) >> 20,
            base: script,
            limit: window.limit,
        });
    };
    let end = dtb + DTB_RESERVE;
    Ok((LoadPlan { script, hypervisor, kernel, initrd, dtb, end }, loads))
}

/// Each DomU's module addresses from `start` on, and the DTB's address after them.
fn domain_loads(start: u64, domains: &[DomainSizes]) -> (Vec<DomainLoad>, u64) {
    let mut next = start;
    let mut loads: Vec<DomainLoad> = Vec::with_capacity(domains.len());
    for d in domains {
        let kernel = match d.kernel_of.and_then(|j| loads.get(j)) {
            Some(earlier) => earlier.kernel,
            None => {
                let at = next;
                next = align_up(at + d.kernel, ALIGN);
                at
            }
        };
        let initrd = next;
        next = align_up(initrd + d.initrd, ALIGN);
        loads.push(DomainLoad { kernel, initrd });
    }
    (loads, next)
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

    /// Every `[start, start + size)` in the list is 2 MiB aligned and ends before the next starts.
    fn assert_in_order_and_disjoint(blobs: &[(u64, u64)]) {
        for pair in blobs.windows(2) {
            let ((a, len), (b, _)) = (pair[0], pair[1]);
            assert_eq!(b % ALIGN, 0);
            assert!(a + len <= b, "{a:#x}+{len:#x} overlaps {b:#x}");
        }
    }

    #[test]
    fn domain_modules_go_past_dom0s_window() {
        let w = Window::for_board(BoardKind::QemuVirt);
        let sizes = Sizes { hypervisor: MIB, kernel: 11 * MIB + 7, initrd: 3 * MIB };
        let dom0_mem = 512 * MIB;
        let domains = [
            DomainSizes { kernel: 11 * MIB + 7, initrd: 2 * MIB + 1, kernel_of: None },
            DomainSizes { kernel: 5 * MIB, initrd: ALIGN, kernel_of: None },
        ];
        let (p, d) = plan_with_domains(w, sizes, dom0_mem, &domains).unwrap();
        // Dom0's files where they are without DomUs; the DomUs' start right past Dom0's window.
        assert_eq!(p, plan(w, sizes).map(|q| LoadPlan { dtb: p.dtb, end: p.end, ..q }).unwrap());
        assert_eq!(d[0].kernel, p.kernel + dom0_mem);
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
        assert_in_order_and_disjoint(&blobs);
        assert_eq!(d[1].initrd + ALIGN, p.dtb);
        // Nothing but Dom0's own files inside the dom0_mem bytes from its kernel on: the hypervisor
        // can run Dom0 there without copying it.
        let window = p.kernel..p.kernel + dom0_mem;
        assert!(blobs[4..].iter().all(|(a, _)| !window.contains(a)));
        // Too many modules for the window is the same error as for Dom0's files.
        let big = vec![DomainSizes { kernel: 200 * MIB, initrd: 100 * MIB, kernel_of: None }; 3];
        assert!(matches!(
            plan_with_domains(w, sizes, dom0_mem, &big),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn domain_modules_follow_dom0_when_past_its_window_is_no_room() {
        // The Pi's 512 MiB window cannot hold a 512 MiB Dom0 and more: the DomUs follow Dom0's
        // initrd (our hypervisor then copies Dom0's kernel), as they would for Xen.
        let w = Window::for_board(BoardKind::Rpi4);
        let sizes = Sizes { hypervisor: MIB, kernel: 38 * MIB, initrd: 3 * MIB };
        let domains = [DomainSizes { kernel: 38 * MIB, initrd: 3 * MIB, kernel_of: None }];
        let (p, d) = plan_with_domains(w, sizes, 512 * MIB, &domains).unwrap();
        assert_eq!(d[0].kernel, align_up(p.initrd + sizes.initrd, ALIGN));
        assert!(p.end <= w.limit);
        // A 256 MiB Dom0 leaves room past its window.
        let (p, d) = plan_with_domains(w, sizes, 256 * MIB, &domains).unwrap();
        assert_eq!(d[0].kernel, p.kernel + 256 * MIB);
        // With no DomUs, the DTB follows Dom0's initrd whatever dom0_mem is.
        let (q, none) = plan_with_domains(w, sizes, 256 * MIB, &[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(q, plan(w, sizes).unwrap());
    }

    #[test]
    fn a_kernel_two_domus_run_is_loaded_once() {
        let w = Window::for_board(BoardKind::QemuVirt);
        let sizes = Sizes { hypervisor: MIB, kernel: 38 * MIB, initrd: 3 * MIB };
        let one = DomainSizes { kernel: 38 * MIB, initrd: 3 * MIB, kernel_of: None };
        let (p, d) = plan_with_domains(
            w,
            sizes,
            512 * MIB,
            &[one, DomainSizes { kernel_of: Some(0), ..one }],
        )
        .unwrap();
        assert_eq!(d[1].kernel, d[0].kernel);
        assert_eq!(d[1].initrd, d[0].initrd + 4 * MIB);
        assert_eq!(p.dtb, d[1].initrd + 4 * MIB);
        let (q, _) = plan_with_domains(w, sizes, 512 * MIB, &[one, one]).unwrap();
        assert_eq!(q.dtb, p.dtb + 38 * MIB, "a second copy takes its own room");
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
