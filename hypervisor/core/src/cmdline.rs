//! The hypervisor's command line (`xen,xen-bootargs`), read with Xen's option names so that one boot
//! script serves Xen and rpixen: `console=dtuart dtuart=serial1 sync_console dom0_mem=512M`.

/// Options the hypervisor understands; unknown words are ignored, as Xen ignores them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HvArgs<'a> {
    /// `console=dtuart` was given (other values, e.g. `none`, silence the console).
    pub console_dtuart: bool,
    /// `console=none`.
    pub console_none: bool,
    /// `dtuart=` without its `:options` tail: an alias (`serial1`) or a node path (`/soc/serial@7e215040`).
    pub dtuart: Option<&'a str>,
    /// `sync_console`: every line is written out before execution continues. rpixen's console is always
    /// polled and synchronous, so this is accepted for compatibility and reported.
    pub sync_console: bool,
    /// `dom0_mem=` in bytes.
    pub dom0_mem: Option<u64>,
    /// `dom0_max_vcpus=`.
    pub dom0_max_vcpus: Option<usize>,
    /// `dom0_watchdog=<seconds>`: Dom0's watchdog starts running at boot with this timeout, so that a
    /// Dom0 that hangs before its userspace feeds it (a kernel hang in an update's trial boot) still
    /// ends in a reset; Linux's `sp805_wdt` finds it running and its watchdog core keeps it fed until
    /// a daemon opens it. Not a Xen option.
    pub dom0_watchdog_secs: Option<u32>,
    /// `hv_selftest=el2-fault`: fault at EL2 on purpose right after the console is up, to show (and
    /// test) the panic report. Not a Xen option.
    pub selftest_el2_fault: bool,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum CmdlineError {
    /// `dom0_mem=` is not a size such as `512M`.
    BadSize,
    /// `dom0_max_vcpus=` is not a number.
    BadNumber,
    /// `dom0_watchdog=` is not a number of seconds (1 to 60).
    BadWatchdog,
}

impl CmdlineError {
    pub fn message(self) -> &'static str {
        match self {
            CmdlineError::BadSize => "dom0_mem= is not a size such as 512M",
            CmdlineError::BadNumber => "dom0_max_vcpus= is not a number",
            CmdlineError::BadWatchdog => "dom0_watchdog= is not a number of seconds (1 to 60)",
        }
    }
}

/// Parses a size with an optional K/M/G suffix (Xen's `parse_size_and_unit`, bytes when bare).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        // `get`, not indexing: a str index that could panic links the char-boundary panic and
        // Unicode tables (~3 KiB) into the EL2 binary.
        b'K' | b'k' => (s.get(..s.len() - 1)?, 1u64 << 10),
        b'M' | b'm' => (s.get(..s.len() - 1)?, 1 << 20),
        b'G' | b'g' => (s.get(..s.len() - 1)?, 1 << 30),
        _ => (s, 1),
    };
    let n = match num.strip_prefix("0x") {
        Some(hex) => parse_uint(hex, 16)?,
        None => parse_uint(num, 10)?,
    };
    n.checked_mul(mult)
}

/// Digits in `radix` only (no sign), checked for overflow: the one integer parser of the EL2
/// binary (`str::parse` for two integer types and `from_str_radix` were ~500 bytes of it).
fn parse_uint(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        n.checked_mul(u64::from(radix))?.checked_add(u64::from(char::from(b).to_digit(radix)?))
    })
}

pub fn parse(line: &str) -> Result<HvArgs<'_>, CmdlineError> {
    let mut a = HvArgs::default();
    for word in line.split_ascii_whitespace() {
        let (key, val) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "console" => {
                a.console_dtuart = val.split(',').any(|v| v == "dtuart");
                a.console_none = val == "none";
            }
            "dtuart" => a.dtuart = Some(val.split(':').next().unwrap_or(val)),
            "sync_console" => a.sync_console = true,
            // Xen accepts `dom0_mem=512M,max:512M`; the first plain size is Dom0's memory.
            "dom0_mem" => {
                let size =
                    val.split(',').find(|v| !v.contains(':')).ok_or(CmdlineError::BadSize)?;
                a.dom0_mem = Some(parse_size(size).ok_or(CmdlineError::BadSize)?);
            }
            "dom0_max_vcpus" => {
                let n = parse_uint(val, 10).ok_or(CmdlineError::BadNumber)?;
                a.dom0_max_vcpus = Some(n as usize)
            }
            "dom0_watchdog" => {
                let secs = parse_uint(val, 10).filter(|s| (1..=60).contains(s));
                a.dom0_watchdog_secs = Some(secs.ok_or(CmdlineError::BadWatchdog)? as u32);
            }
            "hv_selftest" => a.selftest_el2_fault = val == "el2-fault",
            _ => {}
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xen_console_options() {
        let a = parse("console=dtuart dtuart=serial1:115200n8 sync_console dom0_mem=512M").unwrap();
        assert!(a.console_dtuart && a.sync_console && !a.console_none);
        assert_eq!(a.dtuart, Some("serial1"));
        assert_eq!(a.dom0_mem, Some(512 << 20));
        let a = parse("dtuart=/soc/serial@7e215040 dom0_mem=1G,max:1G loglvl=all").unwrap();
        assert_eq!(a.dtuart, Some("/soc/serial@7e215040"));
        assert_eq!(a.dom0_mem, Some(1 << 30));
        assert!(!a.selftest_el2_fault);
        assert!(parse("hv_selftest=el2-fault").unwrap().selftest_el2_fault);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(parse("dom0_mem=lots"), Err(CmdlineError::BadSize));
        assert_eq!(parse("dom0_max_vcpus=x"), Err(CmdlineError::BadNumber));
        assert_eq!(parse("dom0_watchdog=30").unwrap().dom0_watchdog_secs, Some(30));
        for bad in ["dom0_watchdog=0", "dom0_watchdog=61", "dom0_watchdog=5s"] {
            assert_eq!(parse(bad), Err(CmdlineError::BadWatchdog), "{bad}");
        }
        assert_eq!(parse_size("0x1000"), Some(0x1000));
        assert_eq!(parse_size("64k"), Some(65536));
        // The one integer parser: digits only, overflow refused.
        assert_eq!(parse_size("0xfG"), Some(15 << 30));
        for bad in ["", "0x", "+5", "-1", "18446744073709551616", "0x1_000", "0xg"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_size("17179869184G"), None);
        assert_eq!(parse("dom0_max_vcpus="), Err(CmdlineError::BadNumber));
    }
}
