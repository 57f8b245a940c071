//! Mounting: the early virtual filesystems, mounts from the config, and unmounting at shutdown.
//! The plans are plain data (testable on the host); [`mount_one`] is the only place that mounts.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

/// One mount to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

impl MountSpec {
    pub fn new(
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> MountSpec {
        MountSpec {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.map(str::to_owned),
        }
    }
}

/// The filesystems every boot needs, in order (parents before children).
pub fn early_plan() -> Vec<MountSpec> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        MountSpec::new("proc", "/proc", "proc", nosuid_nodev_noexec, None),
        MountSpec::new("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None),
        MountSpec::new("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
        MountSpec::new(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        MountSpec::new(
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        MountSpec::new(
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ]
}

/// Splits `plan` into the mounts that leave `path` visible and the targets of those that would
/// cover it (a mount on `path` itself or on one of its folders).
pub fn not_hiding(plan: Vec<MountSpec>, path: &std::path::Path) -> (Vec<MountSpec>, Vec<String>) {
    let (hiding, kept): (Vec<MountSpec>, Vec<MountSpec>) =
        plan.into_iter().partition(|m| path.starts_with(&m.target));
    (kept, hiding.into_iter().map(|m| m.target).collect())
}

/// The mounts of the config as specs: `source: PARTLABEL=NAME` goes through `by_label` (to a /dev
/// path); the problems list names the mounts that cannot be made.
pub fn config_plan(
    mounts: &[init_config::Mount],
    by_label: impl Fn(&str) -> Option<String>,
) -> (Vec<MountSpec>, Vec<String>) {
    let mut plan = Vec::new();
    let mut problems = Vec::new();
    for m in mounts {
        let (flags, data) = parse_options(m.options.as_deref().unwrap_or(""));
        let source = match m.source.strip_prefix("PARTLABEL=") {
            Some(label) => by_label(label),
            None => Some(m.source.clone()),
        };
        match source {
            Some(s) => plan.push(MountSpec::new(&s, &m.target, &m.fstype, flags, data.as_deref())),
            None => problems.push(format!("mount {}: no partition {}", m.target, m.source)),
        }
    }
    (plan, problems)
}

/// Splits mount(8)-style options into flags and the data string the filesystem gets.
pub fn parse_options(options: &str) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "defaults" => {}
            other => data.push(other),
        }
    }
    (flags, (!data.is_empty()).then(|| data.join(",")))
}

/// One line of /proc/self/mountinfo: mount point and filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub target: String,
    pub fstype: String,
}

/// Parses /proc/self/mountinfo text (`36 35 98:0 / /mnt rw,noatime - ext3 /dev/root rw`).
pub fn parse_mountinfo(text: &str) -> Vec<Mounted> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mounted {
                target: unescape(fields.get(4)?),
                fstype: (*fields.get(sep + 1)?).to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn current_mounts() -> Vec<Mounted> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

/// Mounts `spec` unless something of the same type is already mounted there (after a root switch,
/// or in a host test that already has /proc). Creates the mount point. Returns whether it mounted.
pub fn mount_one(spec: &MountSpec) -> Result<bool, String> {
    mount_unless(spec, &current_mounts())
}

fn mount_unless(spec: &MountSpec, mounted: &[Mounted]) -> Result<bool, String> {
    if mounted.iter().any(|m| m.target == spec.target && m.fstype == spec.fstype) {
        return Ok(false);
    }
    if let Err(e) = std::fs::create_dir_all(&spec.target) {
        return Err(format!("cannot create mount point {}: {e}", spec.target));
    }
    nix::mount::mount(
        Some(spec.source.as_str()),
        spec.target.as_str(),
        Some(spec.fstype.as_str()),
        spec.flags,
        spec.data.as_deref(),
    )
    .map_err(|e| format!("mount {} on {} ({}): {e}", spec.source, spec.target, spec.fstype))?;
    Ok(true)
}

/// Mounts a plan, logging failures and going on; returns the targets it mounted.
pub fn mount_all(plan: &[MountSpec]) -> Vec<String> {
    let mut done = Vec::new();
    // Read the mount table once; it only changes through our own mounts here (/proc may not even
    // be mounted before the first one).
    let mounted = current_mounts();
    for spec in plan {
        match mount_unless(spec, &mounted) {
            Ok(true) => done.push(spec.target.clone()),
            Ok(false) => {}
            Err(e) => crate::info!("{e}"),
        }
    }
    done
}

/// Unmounts `targets` in reverse order; a busy one is detached instead.
pub fn unmount_all(targets: &[String]) {
    for t in targets.iter().rev() {
        if t == "/" {
            continue;
        }
        if let Err(e) = nix::mount::umount2(t.as_str(), MntFlags::empty()) {
            if let Err(e2) = nix::mount::umount2(t.as_str(), MntFlags::MNT_DETACH) {
                crate::info!("cannot unmount {t}: {e}; detach: {e2}");
            }
        }
    }
}

/// At shutdown on a real system: unmount everything except / and the kernel's virtual trees, which
/// hold nothing to lose, then make / read-only so the disk is clean.
pub fn unmount_system() {
    let keep = ["/", "/proc", "/sys", "/dev"];
    let targets: Vec<String> = current_mounts()
        .into_iter()
        .map(|m| m.target)
        .filter(|t| !keep.contains(&t.as_str()))
        .collect();
    unmount_all(&targets);
    let _ = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
}

/// Whether `path` exists (a tiny helper used by several modules).
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_over_the_config_are_left_out() {
        let (kept, skipped) = not_hiding(early_plan(), std::path::Path::new("/tmp/ci/t/init.yml"));
        assert_eq!(skipped, vec!["/tmp".to_string()]);
        assert!(
            kept.iter().any(|m| m.target == "/run") && !kept.iter().any(|m| m.target == "/tmp")
        );
        let (kept, skipped) = not_hiding(early_plan(), std::path::Path::new("/work/t/init.yml"));
        assert!(skipped.is_empty());
        assert_eq!(kept.len(), early_plan().len());
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d) = parse_options("ro,nosuid,size=10M,mode=0755");
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(d.as_deref(), Some("size=10M,mode=0755"));
        assert_eq!(parse_options(""), (MsFlags::empty(), None));
    }

    #[test]
    fn config_mounts_resolve_labels() {
        let m = |source: &str| init_config::Mount {
            source: source.into(),
            target: "/data".into(),
            fstype: "ext4".into(),
            options: Some("ro,noatime".into()),
        };
        let by_label = |l: &str| (l == "DATA").then(|| "/dev/vda6".to_owned());
        let (plan, problems) =
            config_plan(&[m("PARTLABEL=DATA"), m("PARTLABEL=NOPE"), m("/dev/sda1")], by_label);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].source, "/dev/vda6");
        assert_eq!(plan[0].flags, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        assert_eq!(plan[1].source, "/dev/sda1");
        assert_eq!(problems, ["mount /data: no partition PARTLABEL=NOPE"]);
    }

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    30 22 0:5 / /mnt/with\\040space rw shared:1 - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0], Mounted { target: "/proc".into(), fstype: "proc".into() });
        assert_eq!(m[1], Mounted { target: "/mnt/with space".into(), fstype: "tmpfs".into() });
    }

    #[test]
    fn early_plan_mounts_parents_first() {
        let plan = early_plan();
        let dev = plan.iter().position(|m| m.target == "/dev").unwrap();
        let pts = plan.iter().position(|m| m.target == "/dev/pts").unwrap();
        assert!(dev < pts);
    }
}
