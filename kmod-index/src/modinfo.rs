//! The `.modinfo` section of a module's ELF image: the `key=value` strings (`name=`, `alias=`,
//! `depends=`, `vermagic=`) the kernel build embeds. Hand-written (a few lines of ELF64 section
//! walking) so that PID 1, which uses this crate, carries no ELF crate.

/// The `key=value` pairs of `.modinfo`, in order; empty for anything but a little-endian ELF64
/// (what arm64 and x86_64 modules are) with that section.
pub fn modinfo(elf: &[u8]) -> Vec<(String, String)> {
    section(elf, b".modinfo")
        .unwrap_or(&[])
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn section<'a>(elf: &'a [u8], wanted: &[u8]) -> Option<&'a [u8]> {
    let u16_at =
        |o: usize| elf.get(o..o.checked_add(2)?).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| {
        elf.get(o..o.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |o: usize| -> Option<usize> {
        let b = elf.get(o..o.checked_add(8)?)?;
        usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return None;
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?);
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab = u64_at(header(shstrndx)?.checked_add(0x18)?)?;
    for i in 0..shnum {
        let h = header(i)?;
        let name_off = strtab.checked_add(u32_at(h)?)?;
        let name = elf.get(name_off..)?.split(|b| *b == 0).next()?;
        if name == wanted {
            let (off, size) = (u64_at(h.checked_add(0x18)?)?, u64_at(h.checked_add(0x20)?)?);
            return elf.get(off..off.checked_add(size)?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE image: null section, .shstrtab and .modinfo.
    fn elf(modinfo_bytes: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut img = vec![0u8; 64];
        img[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = img.len();
        img.extend_from_slice(shstrtab);
        let modinfo_off = img.len();
        img.extend_from_slice(modinfo_bytes);
        let shoff = img.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            img.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len());
        sh(11, modinfo_off, modinfo_bytes.len());
        img[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        img[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        img[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        img[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
        img
    }

    #[test]
    fn pairs_in_order() {
        let img = elf(b"alias=virtio:d00000002v*\0depends=virtio\0name=virtio_blk\0\0");
        assert_eq!(
            modinfo(&img),
            [
                ("alias".to_owned(), "virtio:d00000002v*".to_owned()),
                ("depends".to_owned(), "virtio".to_owned()),
                ("name".to_owned(), "virtio_blk".to_owned()),
            ]
        );
    }

    #[test]
    fn not_elf_or_truncated_gives_nothing() {
        assert!(modinfo(b"not an elf").is_empty());
        let img = elf(b"name=x\0");
        assert!(modinfo(&img[..img.len() - 40]).is_empty(), "the .modinfo section header is cut");
        let mut big_endian = img.clone();
        big_endian[5] = 2;
        assert!(modinfo(&big_endian).is_empty());
    }
}
