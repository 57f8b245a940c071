//! `fnmatch(3)` without flags, the matcher kmod uses for module aliases: `*` (any run, `/`
//! included), `?`, `[...]` with ranges and `!`/`^` negation, `\` escaping. Hand-written because
//! the glob crates match paths (`*` stops at `/`), and alias patterns are not paths.

/// Whether `text` matches `pattern` in full.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it stands for).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(1),
            Some('[') if closes(&p[pi..]) => class(&p[pi..], t[ti]),
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(2),
            Some(c) => (*c == t[ti]).then_some(1),
            None => None,
        };
        match step {
            Some(n) => {
                pi += n;
                ti += 1;
            }
            None => match star {
                // Let the last `*` swallow one more character and retry from there.
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether the `[` at the start of `p` opens a bracket expression (it has its closing `]`); an
/// unterminated `[` is a literal `[`, as in fnmatch.
fn closes(p: &[char]) -> bool {
    let mut i = 1;
    if matches!(p.get(i), Some('!' | '^')) {
        i += 1;
    }
    // A `]` right after the opening (and its negation) is a member, not the end.
    if p.get(i) == Some(&']') {
        i += 1;
    }
    p[i.min(p.len())..].contains(&']')
}

/// Matches `c` against the bracket expression at the start of `p`; returns its length in the
/// pattern when it matches.
fn class(p: &[char], c: char) -> Option<usize> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|h| *h != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn stars_and_questions() {
        assert!(m("virtio:d00000002v*", "virtio:d00000002v00554D4D"));
        assert!(m("of:N*T*Cvirtio,mmio", "of:NvirtioT(null)Cvirtio,mmio"));
        assert!(m("of:N*T*Cvirtio,mmioC*", "of:NvirtioT(null)Cvirtio,mmioCfoo"));
        assert!(!m("of:N*T*Cvirtio,mmio", "of:NvirtioT(null)Cvirtio,mmiox"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "a/x/b/y/c"), "`*` crosses `/` (no FNM_PATHNAME)");
        assert!(!m("a*b*c", "a/x/b/y/d"));
        assert!(m("pci:v00008086d*sv*", "pci:v00008086d00001234sv00000000"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("abc", "abcd"));
        assert!(!m("", "a"));
    }

    #[test]
    fn bracket_expressions() {
        assert!(m(
            "usb:v*p*d*dc*dsc*dp*ic09isc*ip*in*",
            "usb:v1D6Bp0002d0612dc09dsc00dp01ic09isc00ip00in00"
        ));
        assert!(m("x[0-9]y", "x5y"));
        assert!(!m("x[0-9]y", "xay"));
        assert!(m("x[!0-9]y", "xay"));
        assert!(m("x[^0-9]y", "xay"));
        assert!(!m("x[!0-9]y", "x1y"));
        assert!(m("x[]]y", "x]y"), "a leading ] is a member");
        assert!(m("x[a-]y", "x-y"), "a trailing - is a member");
        assert!(m("x[", "x["), "an unterminated [ is literal");
        assert!(m("dmi*:rvn[Ll][Ee][Nn]*", "dmi:bvnX:rvnLENOVO:"));
    }

    #[test]
    fn escapes() {
        assert!(m(r"a\*b", "a*b"));
        assert!(!m(r"a\*b", "axb"));
    }
}
