//! Applies OCI layers to a [`Tree`], with the image-spec semantics: whiteouts (`.wh.NAME`) and opaque
//! markers (`.wh..wh..opq`) act on lower layers only and are applied before the layer's own entries;
//! hard links, symlinks, device nodes, modes, owners and xattrs are kept.
//!
//! A layer is read whole (decompressed, parsed) before it is applied, which is what lets its markers go
//! first; layers are read in parallel and applied in order. Hostile entries are rejected (`..` in a name,
//! hard links to what is not in the image, a non-directory in place of the root, oversized entries) or
//! contained (absolute names are taken relative to the root, symlinks resolve inside the tree). The
//! uncompressed stream is checked against the config's `diff_id` for the layer.

use std::io::Read;

use super::tree::{components, Kind, Meta, Node, Tree};
use crate::error::{context, Cause};
use crate::oci::digest::HashingReader;
use crate::oci::{Image, LayerBlob, OciError};

/// Bounds on what one image may unpack to, so a hostile layer cannot exhaust memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entry_size: u64,
    pub max_total_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entry_size: 4 << 30, max_total_size: 16 << 30 }
    }
}

const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// One parsed layer entry.
#[derive(Debug)]
enum Op {
    Opaque(Vec<u8>),
    Whiteout(Vec<u8>),
    /// The node, and whether a file's contents were left out (see [`unpack_layers_keeping`]).
    Put(Vec<u8>, Node, bool),
    Link(Vec<u8>, Vec<u8>),
}

/// A parsed layer: its operations in archive order, plus notes on what was contained.
struct ParsedLayer {
    ops: Vec<Op>,
    warnings: Vec<String>,
}

/// A file from the flattened image (what `rpixen pkg cat` and manifest file references read): layers applied in order, symlinks inside the image followed (never
/// outside it).
pub fn read_file(
    opts: &crate::oci::OciOptions,
    image_ref: &str,
    path: &str,
) -> Result<Vec<u8>, OciError> {
    let image = crate::oci::resolve(opts, image_ref)?;
    let limits = Limits::default();
    // First pass reads only this path's contents; if it resolves elsewhere (a symlink, a hard link to
    // another name) the second pass reads everything.
    let wanted: Vec<u8> = components(path.as_bytes()).collect::<Vec<_>>().join(&b'/');
    let mut tree = Tree::new();
    unpack_layers_keeping(&mut tree, &image.name, &image.layers, &limits, Some(&wanted))?;
    if tree.lookup(&wanted, true).is_some_and(|id| tree.dropped.contains(&id)) {
        tree = unpack_image(&image, &limits)?;
    }
    tree.read_file(path).map_err(|detail| OciError::FileNotFound {
        image: image_ref.to_owned(),
        path: path.to_owned(),
        detail: format!(": {detail}"),
    })
}

/// Unpacks all layers of an image into a new tree.
pub fn unpack_image(image: &Image, limits: &Limits) -> Result<Tree, OciError> {
    let mut tree = Tree::new();
    unpack_layers(&mut tree, &image.name, &image.layers, limits)?;
    Ok(tree)
}

/// Applies `layers` in order onto `tree`. Layers are decompressed and parsed in parallel.
pub fn unpack_layers(
    tree: &mut Tree,
    image: &str,
    layers: &[LayerBlob],
    limits: &Limits,
) -> Result<(), OciError> {
    unpack_layers_keeping(tree, image, layers, limits, None)
}

/// Like [`unpack_layers`], but with `keep_data_for`, the contents of regular files are read only for that
/// path (as the layer names it); other files stay empty and their nodes are listed in `tree.dropped`.
/// [`crate::rootfs::read_file`] uses it to avoid holding a whole image in memory for one file.
pub fn unpack_layers_keeping(
    tree: &mut Tree,
    image: &str,
    layers: &[LayerBlob],
    limits: &Limits,
    keep_data_for: Option<&[u8]>,
) -> Result<(), OciError> {
    let threads =
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(layers.len().max(1));
    let parsed: Vec<Result<ParsedLayer, OciError>> = if threads <= 1 {
        layers.iter().map(|l| parse_blob(image, l, limits, keep_data_for)).collect()
    } else {
        // Work-stealing by index: each thread takes the next unparsed layer.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<ParsedLayer, OciError>>>> =
            layers.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(l) = layers.get(i) else { break };
                    *slots[i].lock().expect("no panics while held") =
                        Some(parse_blob(image, l, limits, keep_data_for));
                });
            }
        });
        slots
            .into_iter()
            .map(|s| s.into_inner().expect("no panics while held").expect("every layer parsed"))
            .collect()
    };
    let mut total = 0u64;
    for (layer, parsed) in layers.iter().zip(parsed) {
        let parsed = parsed?;
        for op in &parsed.ops {
            if let Op::Put(_, Node { kind: Kind::File(data), .. }, _) = op {
                total += data.len() as u64;
            }
        }
        if total > limits.max_total_size {
            return Err(layer_err(
                image,
                layer,
                format!("the image unpacks to more than {} bytes", limits.max_total_size).into(),
            ));
        }
        let digest = layer.descriptor.digest().to_string();
        tree.warnings.extend(
            parsed.warnings.into_iter().map(|w| format!("image {image}: layer {digest}: {w}")),
        );
        apply(tree, parsed.ops).map_err(|m| layer_err(image, layer, m))?;
    }
    Ok(())
}

fn layer_err(image: &str, layer: &LayerBlob, source: Cause) -> OciError {
    OciError::Layer {
        image: image.to_owned(),
        layer: layer.descriptor.digest().to_string(),
        source,
    }
}

/// Markers first (opaque, then whiteouts: both only hide lower layers), then entries in archive order.
fn apply(tree: &mut Tree, ops: Vec<Op>) -> Result<(), Cause> {
    for op in &ops {
        match op {
            Op::Opaque(dir) => tree.clear_dir(dir),
            Op::Whiteout(path) => tree.remove(path),
            _ => {}
        }
    }
    for op in ops {
        match op {
            Op::Put(path, node, dropped) => {
                let id = tree
                    .insert(&path, node)
                    .map_err(context(format!("entry `{}`", String::from_utf8_lossy(&path))))?;
                if dropped {
                    tree.dropped.insert(id);
                }
            }
            Op::Link(path, target) => {
                tree.link(&path, &target)
                    .map_err(context(format!("entry `{}`", String::from_utf8_lossy(&path))))?;
            }
            Op::Opaque(_) | Op::Whiteout(_) => {}
        }
    }
    Ok(())
}

fn parse_blob(
    image: &str,
    layer: &LayerBlob,
    limits: &Limits,
    keep: Option<&[u8]>,
) -> Result<ParsedLayer, OciError> {
    let file = std::fs::File::open(&layer.path).map_err(OciError::io(&layer.path))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let media = layer.descriptor.media_type().to_string();
    let stream = decompressor(&media, reader).map_err(|m| layer_err(image, layer, m))?;
    let mut hashing = HashingReader::new(stream);
    let parsed = parse_tar(&mut hashing, limits, keep).map_err(|m| layer_err(image, layer, m))?;
    let (diff_id, _) =
        hashing.finish().map_err(|e| layer_err(image, layer, context("decompressing")(e)))?;
    match &layer.diff_id {
        Some(want) if want != &diff_id => Err(layer_err(
            image,
            layer,
            format!("uncompressed content is {diff_id}, but the config's diff_id says {want}")
                .into(),
        )),
        _ => Ok(parsed),
    }
}

/// Chooses the decompressor from the media type (OCI and Docker names), falling back to the magic bytes.
fn decompressor<'a, R: std::io::BufRead + 'a>(
    media: &str,
    mut r: R,
) -> Result<Box<dyn Read + 'a>, Cause> {
    let magic = r.fill_buf()?;
    let gzip = magic.starts_with(&[0x1f, 0x8b]);
    let zstd = magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let by_name = if media.ends_with("+gzip") || media.ends_with(".tar.gzip") {
        Some("gzip")
    } else if media.ends_with("+zstd") || media.ends_with(".tar.zstd") {
        Some("zstd")
    } else if media.ends_with(".tar") {
        Some("tar")
    } else {
        None
    };
    match (by_name, gzip, zstd) {
        (Some("gzip"), true, _) | (None, true, _) => {
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
        }
        (Some("zstd"), _, true) | (None, _, true) => {
            Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
        }
        (Some("tar"), false, false) | (None, false, false) => Ok(Box::new(r)),
        (Some(kind), _, _) => {
            Err(format!("media type `{media}` says {kind}, but the blob does not start like one")
                .into())
        }
    }
}

fn parse_tar(
    stream: impl Read,
    limits: &Limits,
    keep: Option<&[u8]>,
) -> Result<ParsedLayer, Cause> {
    let mut archive = tar::Archive::new(stream);
    let mut ops = Vec::new();
    let mut warnings = Vec::new();
    let mut layer_total = 0u64;
    let entries = archive.entries().map_err(context("not a tar archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(context("corrupt tar"))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        let path = clean_path(&raw, &mut warnings).map_err(context(format!("entry `{shown}`")))?;
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or(b"");
        if let Some(rest) = name.strip_prefix(WHITEOUT) {
            let dir = &path[..path.len() - name.len()];
            if name == OPAQUE {
                ops.push(Op::Opaque(dir.to_vec()));
            } else if rest.is_empty() {
                warnings.push(format!("ignored `{shown}`: a bare `.wh.` names nothing to delete"));
            } else if rest.starts_with(WHITEOUT) {
                warnings.push(format!("ignored `{shown}`: unknown `.wh..wh.` marker"));
            } else {
                let mut target = dir.to_vec();
                target.extend_from_slice(rest);
                ops.push(Op::Whiteout(target));
            }
            continue;
        }
        let header = entry.header();
        let size = header.size().map_err(context(format!("entry `{shown}`")))?;
        if size > limits.max_entry_size {
            return Err(format!(
                "entry `{shown}` is {size} bytes, over the limit of {} bytes",
                limits.max_entry_size
            )
            .into());
        }
        // The image-wide bound is checked as layers are applied; this one stops a single layer early.
        layer_total += size;
        if layer_total > limits.max_total_size {
            return Err(
                format!("the layer unpacks to more than {} bytes", limits.max_total_size).into()
            );
        }
        let mut meta = Meta {
            mode: header.mode().map_err(context(format!("entry `{shown}`")))? & 0o7777,
            uid: id32(header.uid(), &shown)?,
            gid: id32(header.gid(), &shown)?,
            mtime: header.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        let device = || -> Result<(u32, u32), Cause> {
            let major = header.device_major().map_err(context(format!("entry `{shown}`")))?;
            let minor = header.device_minor().map_err(context(format!("entry `{shown}`")))?;
            let (major, minor) = (major.unwrap_or(0), minor.unwrap_or(0));
            Ok((major, minor))
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let node_kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => None,
            tar::EntryType::Directory => Some(Kind::Dir(Default::default())),
            tar::EntryType::Symlink => {
                let target = link
                    .clone()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("symlink `{shown}` has no target"))?;
                Some(Kind::Symlink(target))
            }
            tar::EntryType::Char => {
                device().map(|(major, minor)| Some(Kind::CharDev { major, minor }))?
            }
            tar::EntryType::Block => {
                device().map(|(major, minor)| Some(Kind::BlockDev { major, minor }))?
            }
            tar::EntryType::Fifo => Some(Kind::Fifo),
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| format!("hard link `{shown}` has no target"))?;
                let target = clean_path(&target, &mut warnings).map_err(context(format!(
                    "hard link `{shown}` -> `{}`",
                    String::from_utf8_lossy(&target)
                )))?;
                if target.is_empty() {
                    return Err(format!("hard link `{shown}` points at the root").into());
                }
                ops.push(Op::Link(path, target));
                continue;
            }
            other => {
                warnings.push(format!("skipped `{shown}`: unsupported tar entry type {other:?}"));
                continue;
            }
        };
        if let Some(pax) =
            entry.pax_extensions().map_err(context(format!("entry `{shown}`: PAX header")))?
        {
            for ext in pax {
                let ext = ext.map_err(context(format!("entry `{shown}`: PAX header")))?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let dropped = node_kind.is_none() && keep.is_some_and(|k| k != path.as_slice());
        let kind = match node_kind {
            Some(k) => k,
            None if dropped => Kind::File(Vec::new()),
            None => {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data).map_err(context(format!("entry `{shown}`")))?;
                if data.len() as u64 != size {
                    return Err(format!(
                        "entry `{shown}`: truncated ({} of {size} bytes)",
                        data.len()
                    )
                    .into());
                }
                Kind::File(data)
            }
        };
        ops.push(Op::Put(path, Node { kind, meta }, dropped));
    }
    Ok(ParsedLayer { ops, warnings })
}

fn id32(id: std::io::Result<u64>, shown: &str) -> Result<u32, Cause> {
    let id = id.map_err(context(format!("entry `{shown}`")))?;
    u32::try_from(id)
        .map_err(|_| format!("entry `{shown}`: owner id {id} does not fit 32 bits").into())
}

/// Normalises an entry name: `.` and empty components dropped, a leading `/` taken as the root (noted),
/// `..` rejected, over-long names rejected. `""` is the root itself.
fn clean_path(raw: &[u8], warnings: &mut Vec<String>) -> Result<Vec<u8>, String> {
    if raw.len() > MAX_PATH {
        return Err(format!("name is {} bytes long, over the limit of {MAX_PATH}", raw.len()));
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut out = Vec::with_capacity(raw.len());
    for c in components(raw) {
        if c == b".." {
            return Err("`..` in a name would leave the root filesystem".into());
        }
        if c.len() > MAX_NAME {
            return Err(format!(
                "a component is {} bytes long, over the limit of {MAX_NAME}",
                c.len()
            ));
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if raw.starts_with(b"/") && !out.is_empty() {
        warnings.push(format!(
            "absolute name `{}` taken relative to the root",
            String::from_utf8_lossy(raw)
        ));
    }
    Ok(out)
}
