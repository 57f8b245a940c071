//! QEMU command lines for the two boards the tests boot, built in one place so a change of machine
//! options (CPU, GIC, memory) reaches every test at once.
//!
//! ```ignore
//! let args = QemuArgs::virt().smp(4).bios(&uboot).disk(&img).user_net(&[(2222, 22)]).build();
//! let q = testkit::Qemu::start_with(&args, 1);
//! ```

use std::path::Path;

/// The `-M` option of QEMU `virt` as our hypervisor needs it: EL2 (`virtualization=on`) and a GICv2
/// (the Pi 4's GIC-400 is a GICv2; our vGIC emulates only that).
pub const VIRT_MACHINE: &str = "virt,virtualization=on,gic-version=2";

/// A QEMU `qemu-system-aarch64` argument list under construction.
#[derive(Debug, Clone)]
pub struct QemuArgs {
    machine: String,
    cpu: Option<&'static str>,
    smp: Option<u32>,
    memory: Option<String>,
    network: Network,
    disks: usize,
    rest: Vec<String>,
}

#[derive(Debug, Clone)]
enum Network {
    /// `-nic none`: the default, so a test never depends on a network it did not ask for.
    None,
    /// The board's own default NIC (raspi4b has no `-nic` knob that works; leave QEMU's default).
    BoardDefault,
    /// User networking on a virtio-net device, with host ports forwarded in (on 127.0.0.1 only) and
    /// optionally QEMU's TFTP server on a host folder.
    User { forwards: Vec<(u16, u16)>, tftp: Option<String> },
}

impl QemuArgs {
    /// QEMU `virt` with EL2 and a GICv2, a Cortex-A72 (the Pi 4's core), 2 CPUs, 2 GiB, no network.
    pub fn virt() -> QemuArgs {
        QemuArgs {
            machine: VIRT_MACHINE.to_owned(),
            cpu: Some("cortex-a72"),
            smp: Some(2),
            memory: Some("2G".to_owned()),
            network: Network::None,
            disks: 0,
            rest: Vec::new(),
        }
    }

    /// QEMU `virt` without EL2: Linux booted directly at EL1, as on a board with no hypervisor.
    pub fn virt_el1() -> QemuArgs {
        QemuArgs { machine: "virt".to_owned(), ..QemuArgs::virt() }
    }

    /// QEMU `raspi4b` (BCM2711, 4 Cortex-A72, 2 GiB): fixed CPUs and memory, the board's own NIC.
    pub fn raspi4b() -> QemuArgs {
        QemuArgs {
            machine: "raspi4b".to_owned(),
            cpu: None,
            smp: None,
            memory: None,
            network: Network::BoardDefault,
            disks: 0,
            rest: Vec::new(),
        }
    }

    /// Adds machine options after the board name (`dumpdtb=FILE`, ...).
    pub fn machine_option(mut self, option: &str) -> QemuArgs {
        self.machine.push(',');
        self.machine.push_str(option);
        self
    }

    pub fn smp(mut self, cpus: u32) -> QemuArgs {
        assert!(self.smp.is_some(), "{} has a fixed number of CPUs", self.machine);
        self.smp = Some(cpus);
        self
    }

    /// Guest RAM in QEMU's notation (`1G`, `512M`).
    pub fn memory(mut self, size: &str) -> QemuArgs {
        assert!(self.memory.is_some(), "{} has fixed memory", self.machine);
        self.memory = Some(size.to_owned());
        self
    }

    /// Firmware in place of a kernel: U-Boot as `-bios` (virt) boots the disk's boot script.
    pub fn bios(self, firmware: &Path) -> QemuArgs {
        self.arg("-bios").arg(path(firmware))
    }

    /// `-kernel`: an arm64 Image, our hypervisor or a bare-metal guest.
    pub fn kernel(self, image: &Path) -> QemuArgs {
        self.arg("-kernel").arg(path(image))
    }

    pub fn dtb(self, dtb: &Path) -> QemuArgs {
        self.arg("-dtb").arg(path(dtb))
    }

    pub fn initrd(self, initrd: &Path) -> QemuArgs {
        self.arg("-initrd").arg(path(initrd))
    }

    pub fn append(self, cmdline: &str) -> QemuArgs {
        self.arg("-append").arg(cmdline)
    }

    /// A raw file placed at a physical address (`-device loader,force-raw=on`), as U-Boot's `load`
    /// would have placed it.
    pub fn load_at(self, file: &Path, addr: u64) -> QemuArgs {
        let device = format!("loader,file={},addr={addr:#x},force-raw=on", path(file));
        self.arg("-device").arg(&device)
    }

    /// A raw disk image as the board's boot medium: a virtio block device on `virt`, the SD card on
    /// `raspi4b`. Call twice on `virt` for a second disk (the first one is `vda`).
    pub fn disk(self, image: &Path) -> QemuArgs {
        if self.machine.starts_with("raspi") {
            let drive = format!("if=sd,format=raw,file={}", path(image));
            return self.arg("-drive").arg(&drive);
        }
        self.virtio_disk(image, "virtio-blk-device")
    }

    /// A raw disk image on a virtio PCI block device (`virt`'s PCIe bus), as a kernel booted without
    /// a boot loader sees a disk the Pi has not got.
    pub fn pci_disk(self, image: &Path) -> QemuArgs {
        assert!(!self.machine.starts_with("raspi"), "raspi4b has no PCIe slot for a disk");
        self.virtio_disk(image, "virtio-blk-pci")
    }

    fn virtio_disk(mut self, image: &Path, device: &str) -> QemuArgs {
        // The first disk keeps the id `d` the monitor commands in tests name.
        let id = match self.disks {
            0 => "d".to_owned(),
            n => format!("d{n}"),
        };
        self.disks += 1;
        let drive = format!("if=none,file={},format=raw,id={id}", path(image));
        self.arg("-drive").arg(&drive).arg("-device").arg(&format!("{device},drive={id}"))
    }

    /// User networking (`10.0.2.0/24`, the host's loopback at 10.0.2.2) on a virtio-net device, with
    /// each `(host, guest)` TCP port forwarded from 127.0.0.1 only.
    pub fn user_net(mut self, forwards: &[(u16, u16)]) -> QemuArgs {
        assert!(!self.machine.starts_with("raspi"), "raspi4b: use the board's own NIC");
        let tftp = match std::mem::replace(&mut self.network, Network::None) {
            Network::User { tftp, .. } => tftp,
            _ => None,
        };
        self.network = Network::User { forwards: forwards.to_vec(), tftp };
        self
    }

    /// User networking whose TFTP server (at 10.0.2.2) serves the host folder `root`, for U-Boot's
    /// netboot.
    pub fn tftp(self, root: &Path) -> QemuArgs {
        let mut a = match self.network {
            Network::User { .. } => self,
            _ => self.user_net(&[]),
        };
        if let Network::User { tftp, .. } = &mut a.network {
            *tftp = Some(path(root).to_owned());
        }
        a
    }

    /// QEMU's human monitor on the Unix socket `socket` (for `set_link`, `device_add`, ...; see
    /// [`crate::monitor_command`]).
    pub fn monitor_socket(self, socket: &Path) -> QemuArgs {
        let monitor = format!("unix:{},server=on,wait=off", path(socket));
        self.arg("-monitor").arg(&monitor)
    }

    /// `-no-reboot`: a guest reset makes QEMU exit instead of booting again.
    pub fn no_reboot(self) -> QemuArgs {
        self.arg("-no-reboot")
    }

    /// Any other argument, as QEMU spells it.
    pub fn arg(mut self, arg: &str) -> QemuArgs {
        self.rest.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> QemuArgs {
        self.rest.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The argument list, without `-display`, `-monitor` and `-serial` (`Qemu::start` adds those).
    pub fn build(&self) -> Vec<String> {
        let mut a = vec!["-M".to_owned(), self.machine.clone()];
        if let Some(cpu) = self.cpu {
            a.extend(["-cpu".to_owned(), cpu.to_owned()]);
        }
        if let Some(n) = self.smp {
            a.extend(["-smp".to_owned(), n.to_string()]);
        }
        if let Some(m) = &self.memory {
            a.extend(["-m".to_owned(), m.clone()]);
        }
        match &self.network {
            Network::None => a.extend(["-nic".to_owned(), "none".to_owned()]),
            Network::BoardDefault => {}
            Network::User { forwards, tftp } => {
                let mut netdev = "user,id=n".to_owned();
                if let Some(root) = tftp {
                    netdev.push_str(&format!(",tftp={root}"));
                }
                for (host, guest) in forwards {
                    netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                }
                // `-nic user,model=virtio-net-device` is refused on `virt`: netdev and device apart.
                a.extend(["-netdev".to_owned(), netdev]);
                a.extend(["-device".to_owned(), "virtio-net-device,netdev=n".to_owned()]);
            }
        }
        a.extend(self.rest.iter().cloned());
        a
    }

    /// The device tree QEMU makes for this machine (`dumpdtb`), written to `out`; QEMU exits at once.
    pub fn dump_dtb(&self, out: &Path) {
        let args = self.clone().machine_option(&format!("dumpdtb={}", path(out))).build();
        crate::run(
            std::process::Command::new("qemu-system-aarch64").args(["-display", "none"]).args(args),
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("QEMU arguments need UTF-8 paths: {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_defaults_are_el2_gicv2_and_no_network() {
        let a = QemuArgs::virt().build();
        assert_eq!(
            a,
            ["-M", VIRT_MACHINE, "-cpu", "cortex-a72", "-smp", "2", "-m", "2G", "-nic", "none"]
        );
    }

    #[test]
    fn two_disks_get_distinct_drive_ids() {
        let a = QemuArgs::virt().disk(Path::new("/a.raw")).disk(Path::new("/b.raw")).build();
        let joined = a.join(" ");
        assert!(joined.contains("file=/a.raw,format=raw,id=d "), "{joined}");
        assert!(joined.contains("virtio-blk-device,drive=d "), "{joined}");
        assert!(joined.contains("file=/b.raw,format=raw,id=d1 "), "{joined}");
        assert!(joined.ends_with("virtio-blk-device,drive=d1"), "{joined}");
    }

    #[test]
    fn user_network_forwards_from_loopback_only() {
        let a = QemuArgs::virt().user_net(&[(2222, 22)]).build().join(" ");
        assert!(a.contains("-netdev user,id=n,hostfwd=tcp:127.0.0.1:2222-:22"), "{a}");
        assert!(!a.contains("-nic none"), "{a}");
    }

    #[test]
    fn tftp_and_forwards_share_one_user_network() {
        let a = QemuArgs::virt().tftp(Path::new("/t")).user_net(&[(1, 2)]).build().join(" ");
        assert!(a.contains("-netdev user,id=n,tftp=/t,hostfwd=tcp:127.0.0.1:1-:2 "), "{a}");
    }

    #[test]
    fn pci_disk_is_a_virtio_pci_device() {
        let a = QemuArgs::virt_el1().pci_disk(Path::new("/a.raw")).build().join(" ");
        assert!(a.ends_with("file=/a.raw,format=raw,id=d -device virtio-blk-pci,drive=d"), "{a}");
    }

    #[test]
    fn raspi4b_has_no_cpu_memory_or_nic_options() {
        let a = QemuArgs::raspi4b().disk(Path::new("/sd.raw")).no_reboot().build();
        assert_eq!(a, ["-M", "raspi4b", "-drive", "if=sd,format=raw,file=/sd.raw", "-no-reboot"]);
    }
}
