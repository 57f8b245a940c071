//! The root filesystem as an in-memory tree. Layers are applied to it and writers read it; nothing is
//! extracted onto the host, so ownership, device nodes and modes need no privileges, and no path in a
//! layer can reach outside the tree: every lookup walks the tree itself, with `..` and symlinks resolved
//! inside it (like `openat2(RESOLVE_IN_ROOT)`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

pub type NodeId = usize;
pub const ROOT: NodeId = 0;

/// Symlinks followed in one lookup before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    pub fn with_mode(mode: u32) -> Meta {
        Meta { mode, ..Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir(BTreeMap<Vec<u8>, NodeId>),
    File(Vec<u8>),
    Symlink(Vec<u8>),
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir(_) => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev { .. } => "character device",
            Kind::BlockDev { .. } => "block device",
            Kind::Fifo => "fifo",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

/// Nodes live in an arena; a hard link is a second directory entry naming the same node.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Things contained rather than rejected (absolute names, ignored markers), for the user to see.
    pub warnings: Vec<String>,
    /// Files whose contents were deliberately not read (see `unpack::unpack_layers_keeping`).
    pub dropped: HashSet<NodeId>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits a path into its components, dropping empty ones and `.`.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Node { kind: Kind::Dir(BTreeMap::new()), meta: Meta::with_mode(0o755) }],
            warnings: Vec::new(),
            dropped: HashSet::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    fn add(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            Kind::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> &mut BTreeMap<Vec<u8>, NodeId> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(children) => children,
            _ => unreachable!("callers only pass directories"),
        }
    }

    /// Walks `path` from the root. Symlinks are followed inside the tree (an absolute target restarts at
    /// the tree's root, `..` stops at it); the last component's symlink only when `follow_last`.
    /// With `create` (used for parents only), missing or non-directory components become directories
    /// (as umoci does), so a layer can always place its entry. Returns the node, or `Err` with why not.
    fn walk(&mut self, path: &[u8], follow_last: bool, create: bool) -> Result<NodeId, String> {
        let mut state = Walk::new(path);
        loop {
            match self.step(&mut state, follow_last, create)? {
                Some(id) => return Ok(id),
                None => {
                    // Blocked at `state.blocked` under the directory on top of the stack: make it a directory.
                    let name = state.blocked.take().expect("step sets it when it stops");
                    let cur = *state.stack.last().expect("root stays");
                    if let Some(old) = self.child(cur, &name) {
                        let what = self.nodes[old].kind.name();
                        self.warnings.push(format!(
                            "replaced {what} `{}` with a directory to hold entries below it",
                            String::from_utf8_lossy(&name)
                        ));
                    }
                    let dir = self.add(Node {
                        kind: Kind::Dir(BTreeMap::new()),
                        meta: Meta::with_mode(0o755),
                    });
                    self.children_mut(cur).insert(name, dir);
                    state.stack.push(dir);
                }
            }
        }
    }

    /// Advances a walk as far as the tree allows without changing it. `Ok(Some(id))`: done.
    /// `Ok(None)`: stopped at a component that is missing or not a directory, and `create` asks for one
    /// (`state.blocked` names it). `Err`: stopped for good.
    fn step(
        &self,
        state: &mut Walk,
        follow_last: bool,
        create: bool,
    ) -> Result<Option<NodeId>, String> {
        while let Some(c) = state.todo.pop_front() {
            if c == b".." {
                if state.stack.len() > 1 {
                    state.stack.pop();
                }
                continue;
            }
            let cur = *state.stack.last().expect("root stays");
            let last = state.todo.is_empty();
            let Some(id) = self.child(cur, &c) else {
                if create {
                    state.blocked = Some(c);
                    return Ok(None);
                }
                return Err(format!("`{}` does not exist", String::from_utf8_lossy(&c)));
            };
            match &self.nodes[id].kind {
                Kind::Symlink(target) if !last || follow_last => {
                    state.links += 1;
                    if state.links > MAX_LINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    if target.starts_with(b"/") {
                        state.stack.truncate(1);
                    }
                    for t in components(target).collect::<Vec<_>>().into_iter().rev() {
                        state.todo.push_front(t.to_vec());
                    }
                }
                Kind::Dir(_) => state.stack.push(id),
                _ if last && !create => state.stack.push(id),
                _ if create => {
                    state.blocked = Some(c);
                    return Ok(None);
                }
                other => {
                    return Err(format!(
                        "`{}` is a {}, not a directory",
                        String::from_utf8_lossy(&c),
                        other.name()
                    ))
                }
            }
        }
        Ok(Some(*state.stack.last().expect("root stays")))
    }

    /// The directory that holds `path`'s last component, and that component. `None` for the root itself.
    fn parent_of<'p>(
        &mut self,
        path: &'p [u8],
        create: bool,
    ) -> Result<Option<(NodeId, &'p [u8])>, String> {
        let comps: Vec<&[u8]> = components(path).collect();
        let Some((name, _)) = comps.split_last() else { return Ok(None) };
        let parent_path = comps[..comps.len() - 1].join(&b'/');
        let parent = self.walk(&parent_path, true, create)?;
        match self.nodes[parent].kind {
            Kind::Dir(_) => Ok(Some((parent, name))),
            ref other => Err(format!("parent is a {}", other.name())),
        }
    }

    /// Puts a node at `path` (parents created as needed), replacing what was there. A directory put on
    /// a directory only takes the new metadata: the children stay, as when tar extracts.
    pub fn insert(&mut self, path: &[u8], node: Node) -> Result<NodeId, String> {
        let Some((parent, name)) = self.parent_of(path, true)? else {
            return match node.kind {
                Kind::Dir(_) => {
                    self.nodes[ROOT].meta = node.meta;
                    Ok(ROOT)
                }
                other => Err(format!("a {} cannot replace the root directory", other.name())),
            };
        };
        if let (Some(old), Kind::Dir(_)) = (self.child(parent, name), &node.kind) {
            if let Kind::Dir(_) = self.nodes[old].kind {
                self.nodes[old].meta = node.meta;
                return Ok(old);
            }
        }
        let id = self.add(node);
        self.children_mut(parent).insert(name.to_vec(), id);
        Ok(id)
    }

    /// A second name for the node at `target` (not followed if it is a symlink).
    pub fn link(&mut self, path: &[u8], target: &[u8]) -> Result<(), String> {
        let target_id = self.lookup(target, false).ok_or_else(|| {
            format!("hard link target `{}` is not in the image", String::from_utf8_lossy(target))
        })?;
        if let Kind::Dir(_) = self.nodes[target_id].kind {
            return Err(format!(
                "hard link target `{}` is a directory",
                String::from_utf8_lossy(target)
            ));
        }
        let Some((parent, name)) = self.parent_of(path, true)? else {
            return Err("a hard link cannot replace the root directory".into());
        };
        self.children_mut(parent).insert(name.to_vec(), target_id);
        Ok(())
    }

    /// Removes the entry at `path` (the entry itself, not a symlink's target). Absent is fine.
    pub fn remove(&mut self, path: &[u8]) {
        if let Ok(Some((parent, name))) = self.parent_of(path, false) {
            self.children_mut(parent).remove(name);
        }
    }

    /// Empties the directory at `path` (an opaque marker). Absent or not a directory is fine.
    pub fn clear_dir(&mut self, path: &[u8]) {
        if let Ok(id) = self.walk(path, true, false) {
            if let Kind::Dir(children) = &mut self.nodes[id].kind {
                children.clear();
            }
        }
    }

    /// The node at `path`, following symlinks inside the tree (the last one only if `follow_last`).
    pub fn lookup(&self, path: &[u8], follow_last: bool) -> Option<NodeId> {
        self.step(&mut Walk::new(path), follow_last, false).ok().flatten()
    }

    /// The contents of the regular file at `path` (symlinks followed inside the tree).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, String> {
        let id =
            self.lookup(path.as_bytes(), true).ok_or("not found (or behind a dangling symlink)")?;
        if self.dropped.contains(&id) {
            return Err("its contents were not read".into());
        }
        match &self.nodes[id].kind {
            Kind::File(data) => Ok(data.clone()),
            other => Err(format!("it is a {}", other.name())),
        }
    }

    /// Visits every reachable entry, parents before children, names sorted. `f(path, node id)`; the root
    /// comes first with the path `""`. Paths have no leading `/`.
    pub fn walk_all(&self, mut f: impl FnMut(&[u8], NodeId)) {
        let mut path = Vec::new();
        f(b"", ROOT);
        self.walk_dir(ROOT, &mut path, &mut f);
    }

    fn walk_dir(&self, dir: NodeId, path: &mut Vec<u8>, f: &mut impl FnMut(&[u8], NodeId)) {
        let Kind::Dir(children) = &self.nodes[dir].kind else { return };
        for (name, &id) in children {
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            f(path, id);
            if let Kind::Dir(_) = self.nodes[id].kind {
                self.walk_dir(id, path, f);
            }
            path.truncate(len);
        }
    }

    /// How many directory entries name each reachable node (its hard-link count; directories count 1).
    pub fn link_counts(&self) -> HashMap<NodeId, u32> {
        let mut counts = HashMap::new();
        self.walk_all(|_, id| *counts.entry(id).or_insert(0) += 1);
        counts
    }

    /// Number of subdirectories of a directory (for its `nlink` of 2 + that).
    pub fn subdirs(&self, dir: NodeId) -> u32 {
        match &self.nodes[dir].kind {
            Kind::Dir(c) => {
                c.values().filter(|&&id| matches!(self.nodes[id].kind, Kind::Dir(_))).count() as u32
            }
            _ => 0,
        }
    }
}

/// Where a path walk stands: directories entered so far (for `..`), components still to go, symlinks
/// followed, and the component it stopped at.
struct Walk {
    stack: Vec<NodeId>,
    todo: VecDeque<Vec<u8>>,
    links: usize,
    blocked: Option<Vec<u8>>,
}

impl Walk {
    fn new(path: &[u8]) -> Walk {
        Walk {
            stack: vec![ROOT],
            todo: components(path).map(<[u8]>::to_vec).collect(),
            links: 0,
            blocked: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &[u8]) -> Node {
        Node { kind: Kind::File(data.to_vec()), meta: Meta::with_mode(0o644) }
    }
    fn symlink(target: &str) -> Node {
        Node { kind: Kind::Symlink(target.as_bytes().to_vec()), meta: Meta::with_mode(0o777) }
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let mut t = Tree::new();
        t.insert(b"usr/lib/x", file(b"x")).unwrap();
        t.insert(b"lib", symlink("usr/lib")).unwrap();
        t.insert(b"escape", symlink("../../../../etc")).unwrap();
        t.insert(b"abs", symlink("/usr/lib")).unwrap();
        assert_eq!(t.read_file("lib/x").unwrap(), b"x");
        assert_eq!(t.read_file("abs/x").unwrap(), b"x");
        // Writing through a planted symlink lands inside the tree.
        t.insert(b"escape/passwd", file(b"p")).unwrap();
        assert_eq!(t.read_file("etc/passwd").unwrap(), b"p");
        t.insert(b"lib/y", file(b"y")).unwrap();
        assert_eq!(t.read_file("usr/lib/y").unwrap(), b"y");
        // The last component is replaced, not followed.
        t.insert(b"abs", file(b"now a file")).unwrap();
        assert_eq!(t.read_file("abs").unwrap(), b"now a file");
        assert_eq!(t.read_file("usr/lib/x").unwrap(), b"x");
    }

    #[test]
    fn loops_and_root() {
        let mut t = Tree::new();
        t.insert(b"a", symlink("b")).unwrap();
        t.insert(b"b", symlink("a")).unwrap();
        assert!(t.read_file("a").is_err());
        assert!(t.insert(b"a/x", file(b"")).is_err());
        assert!(t.insert(b"./", symlink("/tmp")).is_err());
        let mut root = Node { kind: Kind::Dir(BTreeMap::new()), meta: Meta::with_mode(0o700) };
        root.meta.uid = 5;
        assert_eq!(t.insert(b"/", root).unwrap(), ROOT);
        assert_eq!(t.node(ROOT).meta.uid, 5);
        assert!(t.lookup(b"a", false).is_some());
    }

    #[test]
    fn a_file_in_the_way_becomes_a_directory() {
        let mut t = Tree::new();
        t.insert(b"a", file(b"x")).unwrap();
        t.insert(b"a/b/c", file(b"c")).unwrap();
        assert_eq!(t.read_file("a/b/c").unwrap(), b"c");
        assert!(t.warnings.iter().any(|w| w.contains("replaced file `a`")), "{:?}", t.warnings);
        assert!(t.lookup(b"a/b/c/d", true).is_none());
        assert!(t.lookup(b"nope", true).is_none());
    }

    #[test]
    fn hard_links_share_nodes() {
        let mut t = Tree::new();
        t.insert(b"bin/busybox", file(b"bb")).unwrap();
        t.link(b"bin/sh", b"bin/busybox").unwrap();
        assert_eq!(t.lookup(b"bin/sh", false), t.lookup(b"bin/busybox", false));
        assert_eq!(t.link_counts()[&t.lookup(b"bin/sh", false).unwrap()], 2);
        assert!(t.link(b"x", b"nope").is_err());
        assert!(t.link(b"x", b"bin").is_err());
    }
}
