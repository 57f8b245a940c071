//! Mapping paths inside a `.deb` to paths in the package image (`files:` in pkg.yml).

use super::def::FileMap;

/// A compiled `files:` list of one `.deb`; counts how often each rule matched.
pub struct PathMap {
    rules: Vec<Rule>,
    pub hits: Vec<usize>,
}

struct Rule {
    pattern: Vec<glob::Pattern>,
    tree: bool,
    to: String,
}

impl PathMap {
    /// Compiles the rules; patterns were checked when the definition was loaded.
    pub fn new(files: &[FileMap]) -> PathMap {
        let rules: Vec<Rule> = files
            .iter()
            .map(|f| Rule {
                pattern: f
                    .from
                    .trim_end_matches('/')
                    .split('/')
                    .map(|c| {
                        glob::Pattern::new(c).unwrap_or_else(|_| glob::Pattern::new("").unwrap())
                    })
                    .collect(),
                tree: f.from.ends_with('/'),
                to: f.to.trim_end_matches('/').to_owned(),
            })
            .collect();
        let hits = vec![0; rules.len()];
        PathMap { rules, hits }
    }

    /// Where `deb_path` (as the data tarball names it: `./usr/bin/x`, `./boot/`) goes in the image, if
    /// anywhere. The first matching rule wins.
    pub fn map(&mut self, deb_path: &str) -> Option<String> {
        let path = normalize(deb_path);
        if path.is_empty() {
            return None;
        }
        let comps: Vec<&str> = path.split('/').collect();
        for (i, rule) in self.rules.iter().enumerate() {
            let n = rule.pattern.len();
            let fits = if rule.tree { comps.len() >= n } else { comps.len() == n };
            if !fits || !rule.pattern.iter().zip(&comps).all(|(p, c)| p.matches(c)) {
                continue;
            }
            // A tree rule's own folder is not a hit: it is there whenever its parent exists.
            if !rule.tree || comps.len() > n {
                self.hits[i] += 1;
            }
            let mut out = rule.to.clone();
            for c in &comps[n..] {
                out.push('/');
                out.push_str(c);
            }
            return Some(out);
        }
        None
    }
}

/// `./usr/bin/` -> `usr/bin`.
pub fn normalize(p: &str) -> &str {
    let p = p.strip_prefix("./").unwrap_or(p);
    let p = p.strip_prefix('/').unwrap_or(p);
    p.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<FileMap> {
        [
            ("boot/vmlinuz-*", "boot/Image"),
            ("usr/lib/linux-image-*/", "boot/dtbs/"),
            ("usr/lib/modules/", "lib/modules"),
        ]
        .iter()
        .map(|(f, t)| FileMap { from: f.to_string(), to: t.to_string() })
        .collect()
    }

    #[test]
    fn maps_files_and_trees() {
        let mut m = PathMap::new(&rules());
        assert_eq!(m.map("./boot/vmlinuz-6.12.117+deb13-arm64").as_deref(), Some("boot/Image"));
        assert_eq!(m.map("./boot/config-6.12").as_deref(), None);
        assert_eq!(
            m.map("./usr/lib/linux-image-6.12.117+deb13-arm64/broadcom/bcm2711-rpi-4-b.dtb")
                .as_deref(),
            Some("boot/dtbs/broadcom/bcm2711-rpi-4-b.dtb")
        );
        assert_eq!(m.map("./usr/lib/modules/").as_deref(), Some("lib/modules"));
        assert_eq!(
            m.map("./usr/lib/modules/6.12/kernel/a.ko.xz").as_deref(),
            Some("lib/modules/6.12/kernel/a.ko.xz")
        );
        assert_eq!(m.map("./usr/lib/").as_deref(), None);
        assert_eq!(m.map("./").as_deref(), None);
        assert_eq!(m.hits, [1, 1, 1]);
    }

    #[test]
    fn star_stays_in_one_component() {
        let mut m = PathMap::new(&rules());
        assert_eq!(m.map("./boot/vmlinuz-x/y").as_deref(), None);
    }
}
