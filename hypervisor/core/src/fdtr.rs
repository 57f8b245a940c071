//! The device-tree reader (host DTB, the boot loader's `/chosen` modules and domains).
//!
//! Hand-written instead of the `fdt` crate (0.1.5), with the same names for the part of its API we
//! use (`Fdt`, `node::FdtNode`, `NodeProperty`, `MemoryReservation`, `Compatible`, ...), so code
//! written against `fdt` changes only its import. Why not the crate:
//! - size: with the crate the EL2 Image was 81,888 bytes, with this reader 76,496 (`.text` 69,572
//!   -> 65,284, `.rodata` 11,032 -> 9,744);
//! - it panics on malformed trees (`expect`, `assert_eq!`, `panic!("bad prop, tag: {}")`, slicing),
//!   whose formatting pulls in more of `core::fmt` than the rest of the binary needs. Here `Fdt::new` checks the
//!   whole structure block once (tokens, nesting, names, property bounds, string offsets, UTF-8) and
//!   every later read is bounds-checked anyway: a bad blob is an `Err`, never a panic.
//!
//! Nodes are found by walking the structure block; nothing is copied or allocated. One difference
//! from `fdt`: the root's name is "" everywhere (`fdt`'s `all_nodes` calls it "/").

const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Deeper trees are refused: callers walk the tree recursively on the hypervisor's small stacks
/// (real trees are under 10 levels deep).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// The first word is not 0xd00dfeed.
    BadMagic,
    /// The header, or a block it names, lies beyond the buffer.
    BufferTooSmall,
    /// The structure block is not a well-formed tree.
    BadStructure,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at + 4)?))
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// The NUL-terminated UTF-8 string starting at `at`, and the offset just past its NUL.
fn cstr(b: &[u8], at: usize) -> Option<(&str, usize)> {
    let rest = b.get(at..)?;
    let len = rest.iter().position(|c| *c == 0)?;
    Some((core::str::from_utf8(rest.get(..len)?).ok()?, at + len + 1))
}

/// A parsed and checked flattened device tree.
#[derive(Debug, Clone, Copy)]
pub struct Fdt<'a> {
    total: usize,
    structs: &'a [u8],
    strings: &'a [u8],
    rsvmap: &'a [u8],
}

/// One token of the structure block.
enum Token<'a> {
    /// A node's name and the offset of its first property or child.
    Begin(&'a str, usize),
    End,
    Prop(NodeProperty<'a>),
    Finish,
}

impl<'a> Fdt<'a> {
    /// Checks the header and the whole structure block. The buffer may be longer than the tree.
    pub fn new(data: &'a [u8]) -> Result<Self, FdtError> {
        let word = |i: usize| be32(data, i * 4).ok_or(FdtError::BufferTooSmall);
        if word(0)? != MAGIC {
            return Err(FdtError::BadMagic);
        }
        let total = word(1)? as usize;
        let data =
            data.get(..total).filter(|_| total >= HEADER_LEN).ok_or(FdtError::BufferTooSmall)?;
        let block = |off: u32, len: u32| {
            let (off, len) = (off as usize, len as usize);
            data.get(off..off.checked_add(len).ok_or(FdtError::BufferTooSmall)?)
                .ok_or(FdtError::BufferTooSmall)
        };
        let (off_struct, off_strings, off_rsv) = (word(2)?, word(3)?, word(4)?);
        let fdt = Fdt {
            total,
            structs: block(off_struct, word(9)?)?,
            strings: block(off_strings, word(8)?)?,
            rsvmap: data.get(off_rsv as usize..).ok_or(FdtError::BufferTooSmall)?,
        };
        fdt.check().ok_or(FdtError::BadStructure)?;
        Ok(fdt)
    }

    /// The whole structure block is one root node, properties before children, then FDT_END.
    fn check(&self) -> Option<()> {
        let mut at = self.skip_nops(0)?;
        let (mut depth, mut props_allowed) = (0usize, false);
        loop {
            let (token, next) = self.token(at)?;
            match token {
                Token::Begin(..) if depth < MAX_DEPTH => (depth, props_allowed) = (depth + 1, true),
                Token::End => (depth, props_allowed) = (depth.checked_sub(1)?, false),
                Token::Prop(_) if props_allowed => {}
                _ => return None, // too deep, a property after a child, FDT_END inside a node
            }
            at = self.skip_nops(next)?;
            if depth == 0 {
                return matches!(self.token(at)?.0, Token::Finish).then_some(());
            }
        }
    }

    fn skip_nops(&self, mut at: usize) -> Option<usize> {
        while be32(self.structs, at)? == NOP {
            at += 4;
        }
        Some(at)
    }

    /// The token at `at` (not a NOP) and the offset of the next one.
    fn token(&self, at: usize) -> Option<(Token<'a>, usize)> {
        let s = self.structs;
        let body = at.checked_add(4)?;
        match be32(s, at)? {
            BEGIN_NODE => {
                let (name, end) = cstr(s, body)?;
                let next = align4(end)?;
                (next <= s.len()).then_some((Token::Begin(name, next), next))
            }
            END_NODE => Some((Token::End, body)),
            PROP => {
                let len = be32(s, body)? as usize;
                let name = cstr(self.strings, be32(s, body + 4)? as usize)?.0;
                let start = body + 8;
                let value = s.get(start..start.checked_add(len)?)?;
                let next = align4(start + len)?;
                (next <= s.len()).then_some((Token::Prop(NodeProperty { name, value }), next))
            }
            END => Some((Token::Finish, body)),
            _ => None,
        }
    }

    /// The offset just past the END_NODE that closes the node whose body starts at `at`.
    fn skip_body(&self, mut at: usize) -> Option<usize> {
        let mut depth = 1usize;
        while depth > 0 {
            let (token, next) = self.token(self.skip_nops(at)?)?;
            match token {
                Token::Begin(..) => depth += 1,
                Token::End => depth -= 1,
                Token::Prop(_) => {}
                Token::Finish => return None,
            }
            at = next;
        }
        Some(at)
    }

    fn root_node<'b>(&'b self) -> Option<FdtNode<'b, 'a>> {
        match self.token(self.skip_nops(0)?)?.0 {
            Token::Begin(name, body) => Some(FdtNode { name, fdt: self, body }),
            _ => None,
        }
    }

    /// Size of the tree as its header states.
    pub fn total_size(&self) -> usize {
        self.total
    }

    /// The `/memreserve/` entries, up to the terminating zero entry.
    pub fn memory_reservations(&self) -> impl Iterator<Item = MemoryReservation> + 'a {
        let map = self.rsvmap;
        let mut at = 0usize;
        core::iter::from_fn(move || {
            let (address, size) = (be64(map, at)?, be64(map, at + 8)?);
            at += 16;
            (address != 0 || size != 0).then_some(MemoryReservation { address, size })
        })
    }

    /// The node at `path` (`/soc/serial@7e201000`; a component without `@` matches the first child
    /// with that name before its unit address). A path not starting with `/` is an alias.
    pub fn find_node(&self, path: &str) -> Option<FdtNode<'_, 'a>> {
        if !path.starts_with('/') {
            let target = self.find_node("/aliases")?.property(path)?.as_str()?;
            return target.starts_with('/').then(|| self.find_node(target))?;
        }
        let mut cur = self.root_node()?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let exact = part.contains('@');
            cur = cur.children().find(|c| {
                if exact {
                    c.name == part
                } else {
                    c.name.split('@').next() == Some(part)
                }
            })?;
        }
        Some(cur)
    }

    /// Every node, depth first (the root first).
    pub fn all_nodes(&self) -> impl Iterator<Item = FdtNode<'_, 'a>> {
        let mut at = Some(0usize);
        core::iter::from_fn(move || loop {
            let (token, next) = self.token(self.skip_nops(at?)?)?;
            at = Some(next);
            match token {
                Token::Begin(name, body) => return Some(FdtNode { name, fdt: self, body }),
                Token::Finish => at = None,
                Token::End | Token::Prop(_) => {}
            }
        })
    }

    /// The first node (depth first) whose `compatible` lists one of `with`.
    pub fn find_compatible(&self, with: &[&str]) -> Option<FdtNode<'_, 'a>> {
        self.all_nodes()
            .find(|n| n.compatible().is_some_and(|c| c.all().any(|s| with.contains(&s))))
    }

    /// The node whose `phandle` is `phandle`.
    pub fn find_phandle(&self, phandle: u32) -> Option<FdtNode<'_, 'a>> {
        self.all_nodes().find(|n| {
            n.property("phandle").and_then(|p| be32(p.value, 0)).is_some_and(|v| v == phandle)
        })
    }

    /// The root node (an empty one if the tree had none, which `new` refuses).
    pub fn root(&self) -> Root<'_, 'a> {
        Root { node: self.root_node() }
    }

    /// The first `/memory` node (no regions if there is none).
    pub fn memory(&self) -> Memory<'_, 'a> {
        Memory { node: self.find_node("/memory"), root: self.root_node() }
    }
}

/// A node: its name (with unit address) and where its properties start.
#[derive(Debug, Clone, Copy)]
pub struct FdtNode<'b, 'a: 'b> {
    pub name: &'a str,
    fdt: &'b Fdt<'a>,
    body: usize,
}

impl<'b, 'a: 'b> FdtNode<'b, 'a> {
    /// The node's properties, in tree order.
    pub fn properties(self) -> impl Iterator<Item = NodeProperty<'a>> + 'b {
        let mut at = Some(self.body);
        core::iter::from_fn(move || {
            let (token, next) = self.fdt.token(self.fdt.skip_nops(at?)?)?;
            at = Some(next);
            match token {
                Token::Prop(p) => Some(p),
                _ => {
                    at = None;
                    None
                }
            }
        })
    }

    /// The property called `name`.
    pub fn property(self, name: &str) -> Option<NodeProperty<'a>> {
        self.properties().find(|p| p.name == name)
    }

    /// The node's direct children, in tree order.
    pub fn children(self) -> impl Iterator<Item = FdtNode<'b, 'a>> {
        let fdt = self.fdt;
        let mut at = Some(self.body);
        core::iter::from_fn(move || loop {
            let (token, next) = fdt.token(fdt.skip_nops(at?)?)?;
            match token {
                Token::Prop(_) => at = Some(next),
                Token::Begin(name, body) => {
                    at = fdt.skip_body(body);
                    return Some(FdtNode { name, fdt, body });
                }
                Token::End | Token::Finish => {
                    at = None;
                    return None;
                }
            }
        })
    }

    /// The `compatible` property.
    pub fn compatible(self) -> Option<Compatible<'a>> {
        self.property("compatible").map(|p| Compatible { data: p.value })
    }
}

/// `fdt`'s module layout, so `use …::node::FdtNode` paths keep working.
pub mod node {
    pub use super::{FdtNode, NodeProperty};
}

/// `fdt`'s module layout, so `use …::standard_nodes::Compatible` paths keep working.
pub mod standard_nodes {
    pub use super::{Compatible, Memory, MemoryRegion, Root};
}

/// A property: its name and its raw (big-endian) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeProperty<'a> {
    pub name: &'a str,
    pub value: &'a [u8],
}

impl<'a> NodeProperty<'a> {
    /// A one- or two-cell value.
    pub fn as_usize(self) -> Option<usize> {
        match self.value.len() {
            4 => be32(self.value, 0).map(|v| v as usize),
            8 => be64(self.value, 0).map(|v| v as usize),
            _ => None,
        }
    }

    /// The value as a string, trailing NULs removed.
    pub fn as_str(self) -> Option<&'a str> {
        core::str::from_utf8(self.value).map(|s| s.trim_end_matches('\0')).ok()
    }
}

/// One `/memreserve/` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReservation {
    address: u64,
    size: u64,
}

impl MemoryReservation {
    pub fn address(&self) -> usize {
        self.address as usize
    }

    pub fn size(&self) -> usize {
        self.size as usize
    }
}

/// A `compatible` string list.
#[derive(Debug, Clone, Copy)]
pub struct Compatible<'a> {
    data: &'a [u8],
}

impl<'a> Compatible<'a> {
    /// The most specific entry ("" if there is none).
    pub fn first(self) -> &'a str {
        self.all().next().unwrap_or("")
    }

    /// Every entry (entries that are not UTF-8 end the list, as in `fdt`).
    pub fn all(self) -> impl Iterator<Item = &'a str> {
        let mut rest = Some(self.data);
        core::iter::from_fn(move || {
            let data = rest.filter(|d| !d.is_empty())?;
            let (s, tail) = match data.iter().position(|b| *b == 0) {
                Some(i) => (data.get(..i)?, data.get(i + 1..)),
                None => (data, None),
            };
            rest = tail;
            core::str::from_utf8(s).ok()
        })
    }
}

/// The root node.
#[derive(Debug, Clone, Copy)]
pub struct Root<'b, 'a: 'b> {
    node: Option<FdtNode<'b, 'a>>,
}

impl<'b, 'a: 'b> Root<'b, 'a> {
    /// The board's `compatible` (empty if missing).
    pub fn compatible(self) -> Compatible<'a> {
        self.node.and_then(|n| n.compatible()).unwrap_or(Compatible { data: &[] })
    }

    pub fn property(self, name: &str) -> Option<NodeProperty<'a>> {
        self.node?.property(name)
    }
}

/// The `/memory` node.
#[derive(Debug, Clone, Copy)]
pub struct Memory<'b, 'a: 'b> {
    node: Option<FdtNode<'b, 'a>>,
    root: Option<FdtNode<'b, 'a>>,
}

/// One `reg` entry of `/memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub starting_address: usize,
    pub size: Option<usize>,
}

impl Memory<'_, '_> {
    /// The `reg` entries, decoded with the root's `#address-cells`/`#size-cells` (default 2/1; more
    /// than two cells decode nothing).
    pub fn regions(&self) -> impl Iterator<Item = MemoryRegion> + '_ {
        let cells = |name, default| {
            self.root
                .and_then(|r| r.property(name))
                .and_then(|p| be32(p.value, 0))
                .map_or(default, |v| v as usize)
        };
        let (ac, sc) = (cells("#address-cells", 2), cells("#size-cells", 1));
        let reg = self.node.and_then(|n| n.property("reg")).map_or(&[][..], |p| p.value);
        let step = ac.saturating_add(sc).saturating_mul(4);
        let reg = if step == 0 { &[][..] } else { reg };
        reg.chunks_exact(step.max(1)).filter_map(move |c| {
            let size = match sc {
                0 => None,
                _ => Some(read_cells(c.get(ac * 4..)?, sc)? as usize),
            };
            Some(MemoryRegion { starting_address: read_cells(c, ac)? as usize, size })
        })
    }
}

/// A value of up to two cells.
fn read_cells(b: &[u8], cells: usize) -> Option<u64> {
    match cells {
        0 => Some(0),
        1 => be32(b, 0).map(u64::from),
        2 => be64(b, 0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// A tree as the tests mean it, written by `vm-fdt` (an independent writer).
    #[derive(Debug, Clone)]
    struct Model {
        name: String,
        props: Vec<(String, Vec<u8>)>,
        children: Vec<Model>,
    }

    fn write(root: &Model, rsv: &[(u64, u64)]) -> Vec<u8> {
        fn rec(w: &mut vm_fdt::FdtWriter, m: &Model) {
            let n = w.begin_node(&m.name).unwrap();
            for (k, v) in &m.props {
                w.property(k, v).unwrap();
            }
            for c in &m.children {
                rec(w, c);
            }
            w.end_node(n).unwrap();
        }
        let rsv: Vec<_> =
            rsv.iter().map(|(a, s)| vm_fdt::FdtReserveEntry::new(*a, *s).unwrap()).collect();
        let mut w = vm_fdt::FdtWriter::new_with_mem_reserv(&rsv).unwrap();
        rec(&mut w, root);
        w.finish().unwrap()
    }

    /// Compares the reader's view of `node` with the model, and returns the paths it visited.
    fn assert_same(
        node: FdtNode<'_, '_>,
        m: &Model,
        path: &str,
        fdt: &Fdt<'_>,
        out: &mut Vec<String>,
    ) {
        assert_eq!(node.name, m.name);
        let props: Vec<_> =
            node.properties().map(|p| (p.name.to_string(), p.value.to_vec())).collect();
        assert_eq!(props, m.props, "{path}");
        for (k, v) in &m.props {
            assert_eq!(node.property(k).map(|p| p.value), Some(&v[..]), "{path} {k}");
        }
        assert!(node.property("no-such-property").is_none());
        out.push(path.to_string());
        let children: Vec<_> = node.children().collect();
        assert_eq!(children.len(), m.children.len(), "{path}");
        for (c, cm) in children.into_iter().zip(&m.children) {
            let p =
                if path == "/" { format!("/{}", cm.name) } else { format!("{path}/{}", cm.name) };
            assert_eq!(fdt.find_node(&p).map(|n| n.name), Some(cm.name.as_str()), "{p}");
            assert_same(c, cm, &p, fdt, out);
        }
    }

    fn model() -> impl Strategy<Value = Model> {
        let name = "[a-z][a-z0-9,-]{0,12}(@[0-9a-f]{1,8})?";
        let props = proptest::collection::btree_map(
            "[a-z#][a-z0-9,#-]{0,16}",
            proptest::collection::vec(any::<u8>(), 0..24),
            0..6,
        );
        let leaf = (name, props.clone()).prop_map(|(name, props)| Model {
            name,
            props: props.into_iter().collect(),
            children: Vec::new(),
        });
        let tree = leaf.prop_recursive(4, 40, 5, move |inner| {
            (name, props.clone(), proptest::collection::vec(inner, 0..5)).prop_map(
                |(name, props, children)| {
                    // Sibling names must differ for paths to name one node, and so must their
                    // names without the unit address: a path "/r" finds the first of "r@1" and
                    // "r" (libfdt's rule), so the model could not say which one it names.
                    let mut seen = std::collections::BTreeSet::new();
                    let children = children
                        .into_iter()
                        .filter(|c: &Model| {
                            seen.insert(c.name.split('@').next().unwrap_or_default().to_string())
                        })
                        .collect();
                    Model { name, props: props.into_iter().collect(), children }
                },
            )
        });
        tree.prop_map(|mut root| {
            root.name = String::new();
            root
        })
    }

    proptest! {
        #[test]
        fn reads_what_vm_fdt_wrote(root in model(), rsv in proptest::collection::vec((0..1u64 << 19, 1..1u64 << 19), 0..4)) {
            // vm-fdt refuses overlapping reservations: one 4 GiB window each.
            let rsv: Vec<_> =
                rsv.iter().enumerate().map(|(i, (a, s))| ((i as u64) << 32 | a << 12, s << 12)).collect();
            let blob = write(&root, &rsv);
            let fdt = Fdt::new(&blob).unwrap();
            assert_eq!(fdt.total_size(), blob.len());
            let got: Vec<_> = fdt.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
            assert_eq!(got, rsv);
            let mut visited = Vec::new();
            assert_same(fdt.find_node("/").unwrap(), &root, "/", &fdt, &mut visited);
            // all_nodes is depth first, root first: the order assert_same visited them in.
            let names: Vec<_> = fdt.all_nodes().map(|n| n.name).collect();
            let expected: Vec<_> = visited.iter().map(|p| p.rsplit('/').next().unwrap()).collect();
            assert_eq!(names, expected);
        }

        #[test]
        fn damaged_trees_are_errors_or_readable_never_panics(
            root in model(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut blob = write(&root, &[(0x1000, 0x1000)]);
            for (at, byte) in flips {
                let i = at.index(blob.len());
                blob[i] = byte;
            }
            read_everything(&blob);
            read_everything(&blob[..cut.index(blob.len())]);
        }
    }

    /// Touches every part of the reader's API; must not panic whatever the bytes.
    fn read_everything(blob: &[u8]) {
        let Ok(fdt) = Fdt::new(blob) else { return };
        let _ = fdt.memory_reservations().count();
        for n in fdt.all_nodes() {
            for p in n.properties() {
                let _ = (p.as_usize(), p.as_str(), n.property(p.name));
            }
            let _ = n.children().count();
            if let Some(c) = n.compatible() {
                let _ = (c.first(), c.all().count());
            }
        }
        let _ = (fdt.find_node("/a/b"), fdt.find_node("serial0"), fdt.find_compatible(&["x"]));
        let _ = (fdt.find_phandle(1), fdt.root().compatible().all().count());
        let _ = fdt.memory().regions().count();
    }

    fn leaf(name: &str, props: &[(&str, &[u8])]) -> Model {
        Model {
            name: name.to_string(),
            props: props.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
            children: Vec::new(),
        }
    }

    fn sample() -> Vec<u8> {
        let mut root = leaf(
            "",
            &[
                ("#address-cells", &[0, 0, 0, 2]),
                ("#size-cells", &[0, 0, 0, 1]),
                ("compatible", b"acme,board\0acme,soc\0"),
            ],
        );
        root.children = Vec::from([
            leaf("aliases", &[("serial0", b"/soc/serial@1000\0")]),
            leaf(
                "memory@40000000",
                &[
                    ("device_type", b"memory\0"),
                    ("reg", &[0, 0, 0, 0, 0x40, 0, 0, 0, 0x10, 0, 0, 0]),
                ],
            ),
            leaf("soc", &[]),
        ]);
        root.children[2].children = Vec::from([
            leaf(
                "serial@1000",
                &[("compatible", b"arm,pl011\0arm,primecell\0"), ("phandle", &[0, 0, 0, 7])],
            ),
            leaf("serial@2000", &[("compatible", b"arm,pl011\0")]),
        ]);
        write(&root, &[])
    }

    #[test]
    fn paths_aliases_compatible_phandle_and_memory_read_as_fdt_does() {
        let blob = sample();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.find_node("/soc/serial").unwrap().name, "serial@1000", "first by base name");
        assert_eq!(fdt.find_node("/soc/serial@2000").unwrap().name, "serial@2000");
        assert!(fdt.find_node("/soc/serial@3000").is_none());
        assert!(fdt.find_node("/soc/serial@1000/x").is_none());
        assert_eq!(fdt.find_node("serial0").unwrap().name, "serial@1000", "alias");
        assert!(fdt.find_node("serial1").is_none());
        assert_eq!(fdt.find_compatible(&["arm,primecell"]).unwrap().name, "serial@1000");
        assert_eq!(fdt.find_phandle(7).unwrap().name, "serial@1000");
        assert!(fdt.find_phandle(8).is_none());
        let board: Vec<_> = fdt.root().compatible().all().collect();
        assert_eq!(board, ["acme,board", "acme,soc"]);
        assert_eq!(fdt.root().compatible().first(), "acme,board");
        let mem: Vec<_> = fdt.memory().regions().collect();
        assert_eq!(mem, [MemoryRegion { starting_address: 0x4000_0000, size: Some(0x1000_0000) }]);
        let p = fdt.find_node("/soc/serial@1000").unwrap().property("phandle").unwrap();
        assert_eq!(p.as_usize(), Some(7));
        let c = fdt.find_node("/aliases").unwrap().property("serial0").unwrap();
        assert_eq!(c.as_str(), Some("/soc/serial@1000"));
        assert_eq!(c.as_usize(), None);
    }

    #[test]
    fn nops_are_skipped_wherever_libfdt_leaves_them() {
        let mut root = leaf("", &[("#address-cells", &[0, 0, 0, 2])]);
        root.children = ["a@1", "b@2", "c@3"].map(|n| leaf(n, &[("compatible", b"x\0")])).into();
        let mut blob = write(&root, &[(0, 0x1000)]);
        let node_at = |blob: &[u8], name: &[u8]| {
            blob.windows(name.len()).position(|w| w == name).unwrap() - 4
        };
        // libfdt's fdt_nop_node on b@2: BEGIN_NODE, name, its property, END_NODE.
        let b = node_at(&blob, b"b@2\0");
        let b_end = b + 4 + 4 + 12 + 4 + 4;
        blob[b..b_end].chunks_exact_mut(4).for_each(|w| w.copy_from_slice(&NOP.to_be_bytes()));
        // fdt_nop_property on c@3's compatible.
        let c_prop = node_at(&blob, b"c@3\0") + 8;
        blob[c_prop..c_prop + 16]
            .chunks_exact_mut(4)
            .for_each(|w| w.copy_from_slice(&NOP.to_be_bytes()));
        let fdt = Fdt::new(&blob).unwrap();
        let names: Vec<_> = fdt.find_node("/").unwrap().children().map(|c| c.name).collect();
        assert_eq!(names, ["a@1", "c@3"]);
        assert_eq!(fdt.all_nodes().count(), 3);
        assert_eq!(fdt.find_node("/a@1").unwrap().property("compatible").unwrap().value, b"x\0");
        assert_eq!(fdt.find_node("/c@3").unwrap().properties().count(), 0);
        assert!(fdt.find_node("/b@2").is_none());
        let rsv: Vec<_> = fdt.memory_reservations().map(|r| (r.address(), r.size())).collect();
        assert_eq!(rsv, [(0, 0x1000)]);
    }

    fn words(blob: &mut [u8], at: usize, w: &[u32]) {
        for (i, v) in w.iter().enumerate() {
            blob[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
    }

    fn struct_off(blob: &[u8]) -> usize {
        be32(blob, 8).unwrap() as usize
    }

    #[test]
    fn malformed_trees_are_refused() {
        let good = sample();
        assert!(Fdt::new(&good).is_ok());
        assert_eq!(Fdt::new(b"").unwrap_err(), FdtError::BufferTooSmall);
        let mut bad = good.clone();
        bad[0] = 0;
        assert_eq!(Fdt::new(&bad).unwrap_err(), FdtError::BadMagic);
        assert_eq!(Fdt::new(&good[..good.len() - 1]).unwrap_err(), FdtError::BufferTooSmall);
        let mut bad = good.clone();
        words(&mut bad, 36, &[u32::MAX]); // size_dt_struct past the end
        assert_eq!(Fdt::new(&bad).unwrap_err(), FdtError::BufferTooSmall);
        // The root's first token replaced by an unknown one, by END_NODE, by FDT_END.
        for tok in [7, END_NODE, END] {
            let mut bad = good.clone();
            words(&mut bad, struct_off(&good), &[tok]);
            assert_eq!(Fdt::new(&bad).unwrap_err(), FdtError::BadStructure, "token {tok}");
        }
        // A property whose name offset lies outside the strings block.
        let mut bad = good.clone();
        let first_prop = struct_off(&good) + 8; // BEGIN_NODE, "" padded to 4
        assert_eq!(be32(&good, first_prop), Some(PROP));
        words(&mut bad, first_prop + 8, &[0x00FF_FFFF]);
        assert_eq!(Fdt::new(&bad).unwrap_err(), FdtError::BadStructure);
        // A property longer than the structure block.
        let mut bad = good.clone();
        words(&mut bad, first_prop + 4, &[0x00FF_FFFF]);
        assert_eq!(Fdt::new(&bad).unwrap_err(), FdtError::BadStructure);
    }

    fn raw_tree(tokens: &[u32]) -> Vec<u8> {
        // Header, empty reservation map, structure, one string "p".
        let strings = b"p\0\0\0";
        let structs: Vec<u8> = tokens.iter().flat_map(|t| t.to_be_bytes()).collect();
        let (rsv, st) = (HEADER_LEN, HEADER_LEN + 16);
        let strs = st + structs.len();
        let total = strs + strings.len();
        let mut b = Vec::from([0u8; HEADER_LEN + 16]);
        words(
            &mut b,
            0,
            &[
                MAGIC,
                total as u32,
                st as u32,
                strs as u32,
                rsv as u32,
                17,
                16,
                0,
                2,
                structs.len() as u32,
            ],
        );
        b.extend_from_slice(&structs);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn structure_rules_are_those_of_libfdt() {
        // Root with property "p" (empty) and a child "a" (name padded to 4).
        let name_a = u32::from_be_bytes(*b"a\0\0\0");
        let ok = [NOP, BEGIN_NODE, 0, PROP, 0, 0, BEGIN_NODE, name_a, END_NODE, END_NODE, NOP, END];
        let fdt_ok = raw_tree(&ok);
        let fdt = Fdt::new(&fdt_ok).unwrap();
        assert_eq!(fdt.find_node("/a").unwrap().name, "a");
        assert_eq!(fdt.root().property("p").unwrap().value, b"");
        let cases: [(&str, &[u32]); 5] = [
            (
                "property after a child",
                &[BEGIN_NODE, 0, BEGIN_NODE, name_a, END_NODE, PROP, 0, 0, END_NODE, END],
            ),
            ("unclosed root", &[BEGIN_NODE, 0, BEGIN_NODE, name_a, END_NODE, END]),
            ("two roots", &[BEGIN_NODE, 0, END_NODE, BEGIN_NODE, 0, END_NODE, END]),
            ("no FDT_END", &[BEGIN_NODE, 0, END_NODE]),
            ("property outside any node", &[PROP, 0, 0, BEGIN_NODE, 0, END_NODE, END]),
        ];
        for (what, tokens) in cases {
            assert_eq!(Fdt::new(&raw_tree(tokens)).unwrap_err(), FdtError::BadStructure, "{what}");
        }
        let deep = |n: usize| {
            let mut t = Vec::from([BEGIN_NODE, 0]);
            t.extend((1..n).flat_map(|_| [BEGIN_NODE, name_a]));
            t.extend((0..n).map(|_| END_NODE));
            t.push(END);
            raw_tree(&t)
        };
        assert!(Fdt::new(&deep(MAX_DEPTH)).is_ok());
        assert_eq!(Fdt::new(&deep(MAX_DEPTH + 1)).unwrap_err(), FdtError::BadStructure);
        let mut bad_name =
            raw_tree(&[BEGIN_NODE, 0, BEGIN_NODE, 0xFF00_0000, END_NODE, END_NODE, END]);
        assert_eq!(Fdt::new(&bad_name).unwrap_err(), FdtError::BadStructure, "name not UTF-8");
        let at = bad_name.len() - 4 - 16;
        words(&mut bad_name, at, &[name_a]);
        assert!(Fdt::new(&bad_name).is_ok());
    }
}
