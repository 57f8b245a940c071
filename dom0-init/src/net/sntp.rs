//! SNTPv4 (RFC 4330) client packets and the clock rule, without I/O.
//!
//! Hand-written: one 48-byte packet each way; the crates that exist (`sntpc`, `rsntp`) add async
//! runtimes or `chrono` for what is a dozen lines here.
//!
//! The clock rule: the Pi has no RTC, so at boot its clock says 1970. Until a server answers, the
//! clock never shows a time before the image was built (or, later, the last time the device saved);
//! an answer that would put it before that floor is refused as wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from NTP's era 0 (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A client request carrying `now` as its transmit time (the server echoes it as "originate").
pub fn request(now: SystemTime) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = (4 << 3) | 3; // LI 0, version 4, mode 3 (client)
    p[40..48].copy_from_slice(&to_ntp(now).to_be_bytes());
    p
}

/// The server's transmit time from a reply to `sent` (our request's transmit stamp), or why the
/// reply is not usable.
pub fn parse_reply(p: &[u8], sent: SystemTime) -> Result<SystemTime, String> {
    if p.len() < 48 {
        return Err(format!("{} bytes, shorter than an NTP packet", p.len()));
    }
    let mode = p[0] & 7;
    let version = (p[0] >> 3) & 7;
    if mode != 4 || !(3..=4).contains(&version) {
        return Err(format!("not a server reply (mode {mode}, version {version})"));
    }
    if p[0] >> 6 == 3 {
        return Err("server not synchronised (leap indicator 3)".into());
    }
    let stratum = p[1];
    if stratum == 0 || stratum > 15 {
        return Err(format!("stratum {stratum} (kiss-o'-death or unsynchronised)"));
    }
    let stamp = |at: usize| u64::from_be_bytes(p[at..at + 8].try_into().expect("8 bytes"));
    if stamp(24) != to_ntp(sent) {
        return Err("reply does not answer our request (originate timestamp differs)".into());
    }
    let transmit = stamp(40);
    if transmit == 0 {
        return Err("no transmit timestamp".into());
    }
    Ok(from_ntp(transmit))
}

fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// NTP time stamps in era 0 wrap in 2036; a stamp whose seconds are below the offset is read as
/// era 1 (RFC 4330 section 3), which keeps this right until 2104.
fn from_ntp(stamp: u64) -> SystemTime {
    let secs = stamp >> 32;
    let nanos = ((stamp & 0xffff_ffff) * 1_000_000_000) >> 32;
    let unix = if secs >= NTP_UNIX_OFFSET {
        secs - NTP_UNIX_OFFSET
    } else {
        secs + (1 << 32) - NTP_UNIX_OFFSET
    };
    UNIX_EPOCH + Duration::new(unix, nanos as u32)
}

/// The server's time corrected by half the round trip (SNTP's simple estimate).
pub fn corrected(server: SystemTime, round_trip: Duration) -> SystemTime {
    server + round_trip / 2
}

/// What to do with the clock at boot: `Some(floor)` when it shows a time before the floor.
pub fn boot_adjustment(now: SystemTime, floor: SystemTime) -> Option<SystemTime> {
    (now < floor).then_some(floor)
}

/// Whether a server's time may be set: never before the floor.
pub fn acceptable(server_time: SystemTime, floor: SystemTime) -> Result<(), String> {
    if server_time < floor {
        let s = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        return Err(format!(
            "server time {} is before the clock's floor {} (image build or last saved time): refused",
            s(server_time),
            s(floor)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn server_reply(req: &[u8; 48], transmit: SystemTime, stratum: u8) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = (4 << 3) | 4;
        p[1] = stratum;
        p[24..32].copy_from_slice(&req[40..48]);
        p[40..48].copy_from_slice(&to_ntp(transmit).to_be_bytes());
        p
    }

    #[test]
    fn request_and_reply() {
        let sent = at(1_000) + Duration::from_millis(250);
        let req = request(sent);
        assert_eq!(req[0], 0x23);
        // 1970-01-01 + 1000.25 s in NTP seconds.
        assert_eq!(u32::from_be_bytes(req[40..44].try_into().unwrap()), 2_208_989_800);
        let server = at(1_900_000_000) + Duration::from_millis(500);
        let got = parse_reply(&server_reply(&req, server, 2), sent).unwrap();
        let diff = got.duration_since(server).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_micros(1), "{diff:?}");
        assert_eq!(corrected(got, Duration::from_millis(40)), got + Duration::from_millis(20));
    }

    #[test]
    fn bad_replies() {
        let sent = at(5_000);
        let req = request(sent);
        assert!(parse_reply(&server_reply(&req, at(1), 0), sent)
            .unwrap_err()
            .contains("stratum 0"));
        assert!(parse_reply(&server_reply(&req, at(1), 2), at(5_001))
            .unwrap_err()
            .contains("originate"));
        assert!(parse_reply(&req, sent).unwrap_err().contains("mode 3"));
        assert!(parse_reply(&[0; 10], sent).is_err());
    }

    #[test]
    fn era_one_after_2036() {
        // 2040-01-01 is past the era-0 wrap (2036-02-07).
        let t = at(2_208_988_800);
        assert_eq!(from_ntp(to_ntp(t)), t);
    }

    #[test]
    fn the_clock_never_goes_back_before_the_floor() {
        let floor = at(1_764_000_000);
        assert_eq!(boot_adjustment(at(0), floor), Some(floor));
        assert_eq!(boot_adjustment(at(1_800_000_000), floor), None);
        assert!(acceptable(at(1_000), floor).unwrap_err().contains("refused"));
        assert!(acceptable(at(1_764_000_001), floor).is_ok());
    }
}
