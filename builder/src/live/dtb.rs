//! Device-tree edits for the boot FAT: `status = "disabled"` on the nodes a manifest lists in
//! `board.dtb_disable` (QEMU's raspi4b lacks blocks the upstream Pi 4 DTB describes).
//!
//! A small flattened-device-tree rewriter instead of a crate: `vm-fdt` only writes new trees and the
//! `fdt` crate only reads, so a read-modify-write through them would rebuild every node and property;
//! this edit touches one property per node and copies everything else token by token (format:
//! devicetree-specification v0.4, chapter 5).

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DtbError {
    #[error("device tree {what}: not a flattened device tree ({why})")]
    Malformed { what: String, why: &'static str },
    #[error("device tree {what}: node `{node}` (board.dtb_disable) does not exist")]
    NoSuchNode { what: String, node: String },
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4).map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Returns a copy of `dtb` with `status = "disabled"` on every node in `paths` (full paths with unit
/// addresses, e.g. `/soc/hdmi@7ef00700`). `what` names the file in errors.
pub fn disable_nodes(what: &str, dtb: &[u8], paths: &[String]) -> Result<Vec<u8>, DtbError> {
    let bad = |why| DtbError::Malformed { what: what.to_owned(), why };
    if paths.is_empty() {
        return Ok(dtb.to_vec());
    }
    if be32(dtb, 0) != Some(MAGIC) {
        return Err(bad("bad magic"));
    }
    let h = |i: usize| be32(dtb, i * 4).ok_or(bad("short header")).map(|v| v as usize);
    let (off_struct, off_strings, off_rsvmap) = (h(2)?, h(3)?, h(4)?);
    let (size_strings, size_struct) = (h(8)?, h(9)?);
    let structs =
        dtb.get(off_struct..off_struct + size_struct).ok_or(bad("structure block out of range"))?;
    let mut strings = dtb
        .get(off_strings..off_strings + size_strings)
        .ok_or(bad("strings block out of range"))?
        .to_vec();
    let rsvmap =
        dtb.get(off_rsvmap..off_struct.min(off_strings)).ok_or(bad("reserve map out of range"))?;

    let status_off = match find_string(&strings, b"status") {
        Some(o) => o,
        None => {
            let o = strings.len();
            strings.extend_from_slice(b"status\0");
            o
        }
    } as u32;
    let string_at = |o: usize| -> &[u8] {
        let s = &strings[o.min(strings.len())..];
        &s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())]
    };

    let mut out = Vec::with_capacity(structs.len() + 64 * paths.len());
    let mut found = vec![false; paths.len()];
    let mut path: Vec<String> = Vec::new();
    // Set while copying the properties of a node to disable: (needs a status added at its end of props).
    let mut pending_status = false;
    let disabled_prop = |out: &mut Vec<u8>| {
        out.extend_from_slice(&PROP.to_be_bytes());
        out.extend_from_slice(&9u32.to_be_bytes());
        out.extend_from_slice(&status_off.to_be_bytes());
        out.extend_from_slice(b"disabled\0\0\0\0");
    };
    let mut i = 0;
    loop {
        let tok = be32(structs, i).ok_or(bad("structure block ends without FDT_END"))?;
        match tok {
            BEGIN_NODE => {
                if pending_status {
                    disabled_prop(&mut out);
                    pending_status = false;
                }
                let name_start = i + 4;
                let rest = structs.get(name_start..).ok_or(bad("truncated node"))?;
                let nul = rest.iter().position(|b| *b == 0).ok_or(bad("unterminated node name"))?;
                let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
                let next = name_start + pad4(nul + 1);
                out.extend_from_slice(&structs[i..next]);
                i = next;
                path.push(name);
                let full = if path.len() == 1 {
                    "/".to_owned()
                } else {
                    path[1..].iter().map(|p| format!("/{p}")).collect()
                };
                if let Some(k) = paths
                    .iter()
                    .position(|p| p.trim_end_matches('/') == full || (full == "/" && p == "/"))
                {
                    found[k] = true;
                    pending_status = true;
                }
            }
            PROP => {
                let len = be32(structs, i + 4).ok_or(bad("truncated property"))? as usize;
                let nameoff = be32(structs, i + 8).ok_or(bad("truncated property"))? as usize;
                let next = i + 12 + pad4(len);
                if next > structs.len() {
                    return Err(bad("property runs past the structure block"));
                }
                if pending_status && string_at(nameoff) == b"status" {
                    // Replace the existing value.
                    disabled_prop(&mut out);
                    pending_status = false;
                } else {
                    out.extend_from_slice(&structs[i..next]);
                }
                i = next;
            }
            END_NODE => {
                if pending_status {
                    disabled_prop(&mut out);
                    pending_status = false;
                }
                out.extend_from_slice(&structs[i..i + 4]);
                path.pop();
                i += 4;
            }
            NOP => i += 4,
            END => {
                out.extend_from_slice(&structs[i..i + 4]);
                break;
            }
            _ => return Err(bad("unknown structure token")),
        }
    }
    if let Some(k) = found.iter().position(|f| !f) {
        return Err(DtbError::NoSuchNode { what: what.to_owned(), node: paths[k].clone() });
    }

    // Header, reserve map, structure block, strings block.
    let header_len = 40usize;
    let rsv_off = pad4(header_len).max(8);
    let rsv_off = rsv_off.div_ceil(8) * 8;
    let struct_off = rsv_off + rsvmap.len();
    let strings_off = struct_off + out.len();
    let total = strings_off + strings.len();
    let mut dtb_out = Vec::with_capacity(total);
    let mut header = dtb[..header_len].to_vec();
    let put = |hdr: &mut Vec<u8>, idx: usize, v: usize| {
        hdr[idx * 4..idx * 4 + 4].copy_from_slice(&(v as u32).to_be_bytes())
    };
    put(&mut header, 1, total);
    put(&mut header, 2, struct_off);
    put(&mut header, 3, strings_off);
    put(&mut header, 4, rsv_off);
    put(&mut header, 8, strings.len());
    put(&mut header, 9, out.len());
    dtb_out.extend_from_slice(&header);
    dtb_out.resize(rsv_off, 0);
    dtb_out.extend_from_slice(rsvmap);
    dtb_out.extend_from_slice(&out);
    dtb_out.extend_from_slice(&strings);
    Ok(dtb_out)
}

fn find_string(strings: &[u8], s: &[u8]) -> Option<usize> {
    let mut o = 0;
    for part in strings.split(|b| *b == 0) {
        if part == s {
            return Some(o);
        }
        o += part.len() + 1;
    }
    None
}
