//! A minimal flattened-device-tree writer (DTSpec v0.4 chapter 5: header, memory reservation block,
//! structure block, strings block; version 17).
//!
//! Hand-written instead of `vm-fdt` (which the host tests still use as an independent writer): the
//! crate's name checks, `BTreeMap` string table and sorted reservations cost the EL2 binary ~9 KiB,
//! against a budget (issue 11) of Bao's 90,112-byte Pi 4 build. The trees written here come from
//! the host's own tree or from fixed DomU layouts, so there is nothing to validate beyond nesting.

use alloc::vec::Vec;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;
const HEADER_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtWriteError {
    /// `finish` with nodes still open, or `end_node` with none open (a bug in the caller).
    Unbalanced,
}

pub struct FdtWriter {
    rsv: Vec<(u64, u64)>,
    structs: Vec<u8>,
    strings: Vec<u8>,
    depth: usize,
    unbalanced: bool,
}

impl FdtWriter {
    /// A writer whose tree reserves the given (address, size) ranges.
    pub fn new(reservations: &[(u64, u64)]) -> Self {
        Self {
            rsv: reservations.to_vec(),
            structs: Vec::new(),
            strings: Vec::new(),
            depth: 0,
            unbalanced: false,
        }
    }

    fn word(&mut self, v: u32) {
        self.structs.extend_from_slice(&v.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structs.len().is_multiple_of(4) {
            self.structs.push(0);
        }
    }

    /// Opens a node; the root is `""`.
    pub fn begin_node(&mut self, name: &str) {
        self.word(BEGIN_NODE);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        self.pad();
        self.depth += 1;
    }

    pub fn end_node(&mut self) {
        if self.depth == 0 {
            self.unbalanced = true;
            return;
        }
        self.word(END_NODE);
        self.depth -= 1;
    }

    /// The offset of `name` in the strings block, added once (linear search: a tree has a few
    /// hundred distinct names at most).
    fn name_offset(&mut self, name: &str) -> u32 {
        let mut off = 0;
        for s in self.strings.split(|b| *b == 0) {
            if s == name.as_bytes() && off < self.strings.len() {
                return off as u32;
            }
            off += s.len() + 1;
        }
        let off = self.strings.len();
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off as u32
    }

    pub fn property(&mut self, name: &str, value: &[u8]) {
        let off = self.name_offset(name);
        self.word(PROP);
        self.word(value.len() as u32);
        self.word(off);
        self.structs.extend_from_slice(value);
        self.pad();
    }

    pub fn property_u32(&mut self, name: &str, v: u32) {
        self.property(name, &v.to_be_bytes());
    }

    pub fn property_u64(&mut self, name: &str, v: u64) {
        self.property(name, &v.to_be_bytes());
    }

    pub fn property_u32s(&mut self, name: &str, vs: &[u32]) {
        // A loop, not `flat_map(..).collect()`: smaller in the EL2 binary (issue 11's budget).
        let mut bytes = Vec::with_capacity(vs.len() * 4);
        for v in vs {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        self.property(name, &bytes);
    }

    pub fn property_string(&mut self, name: &str, s: &str) {
        self.property_strings(name, &[s]);
    }

    pub fn property_strings(&mut self, name: &str, list: &[&str]) {
        let mut bytes = Vec::new();
        for s in list {
            bytes.extend_from_slice(s.as_bytes());
            bytes.push(0);
        }
        self.property(name, &bytes);
    }

    /// An empty (boolean) property.
    pub fn property_flag(&mut self, name: &str) {
        self.property(name, &[]);
    }

    /// The blob: header, reservations (ending with a zero entry), structure block, strings.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtWriteError> {
        if self.depth != 0 || self.unbalanced {
            return Err(FdtWriteError::Unbalanced);
        }
        self.word(END);
        let rsv_len = (self.rsv.len() + 1) * 16;
        let off_struct = HEADER_LEN + rsv_len;
        let off_strings = off_struct + self.structs.len();
        let total = off_strings + self.strings.len();
        let mut out = Vec::with_capacity(total);
        for v in [
            MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            HEADER_LEN as u32,
            17, // version
            16, // last compatible version
            0,  // boot_cpuid_phys
            self.strings.len() as u32,
            self.structs.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for &(a, s) in self.rsv.iter().chain(&[(0, 0)]) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structs);
        out.extend_from_slice(&self.strings);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = FdtWriter::new(&[(0x1000, 0x2000)]);
        w.begin_node("");
        w.property_u32("#address-cells", 2);
        w.property_u32("#size-cells", 2);
        w.property_string("compatible", "linux,dummy-virt");
        w.begin_node("memory@40000000");
        w.property_string("device_type", "memory");
        w.property("reg", &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]);
        w.end_node();
        w.begin_node("chosen");
        w.property_strings("compatible", &["a", "bc"]);
        w.property_u64("linux,initrd-start", 0x4800_0000);
        w.property_flag("empty");
        w.end_node();
        w.end_node();
        w.finish().unwrap()
    }

    #[test]
    fn blob_parses_with_the_fdt_crate() {
        let blob = sample();
        let fdt = crate::fdtr::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.total_size(), blob.len());
        let r: Vec<_> =
            fdt.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
        assert_eq!(r, [(0x1000, 0x2000)]);
        let mem = fdt.find_node("/memory@40000000").unwrap();
        assert_eq!(mem.property("reg").unwrap().value.len(), 16);
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(chosen.property("compatible").unwrap().value, b"a\0bc\0");
        assert_eq!(chosen.property("empty").unwrap().value, b"");
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().value,
            0x4800_0000u64.to_be_bytes()
        );
    }

    #[test]
    fn names_are_stored_once() {
        let blob = sample();
        let strings_len = u32::from_be_bytes(blob[32..36].try_into().unwrap()) as usize;
        let off = u32::from_be_bytes(blob[12..16].try_into().unwrap()) as usize;
        let strings = &blob[off..off + strings_len];
        let count = strings.split(|b| *b == 0).filter(|s| *s == b"compatible").count();
        assert_eq!(count, 1);
    }

    #[test]
    fn dtc_accepts_the_blob() {
        let dir = std::env::temp_dir().join(format!("fdtw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.dtb");
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output()
            .expect("dtc (device-tree-compiler) must be installed");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success(), "dtc: {}", String::from_utf8_lossy(&out.stderr));
        let dts = String::from_utf8(out.stdout).unwrap();
        assert!(dts.contains("/memreserve/\t0x0000000000001000 0x0000000000002000;"), "{dts}");
        assert!(dts.contains("reg = <0x00 0x40000000 0x00 0x10000000>;"), "{dts}");
        // dtc prints a string list either way, depending on its version.
        assert!(
            dts.contains("compatible = \"a\\0bc\";") || dts.contains("compatible = \"a\", \"bc\";"),
            "{dts}"
        );
        assert!(dts.contains("empty;"), "{dts}");
    }

    #[test]
    fn unbalanced_nodes_are_an_error() {
        let mut w = FdtWriter::new(&[]);
        w.begin_node("");
        assert_eq!(w.finish(), Err(FdtWriteError::Unbalanced));
        let mut w = FdtWriter::new(&[]);
        w.begin_node("");
        w.end_node();
        w.end_node();
        assert_eq!(w.finish(), Err(FdtWriteError::Unbalanced));
    }
}
