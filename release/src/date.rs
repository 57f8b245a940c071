//! Dates from `SOURCE_DATE_EPOCH`, so equal inputs give equal release files.

use chrono::DateTime;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("SOURCE_DATE_EPOCH {0} is out of the range of dates")]
pub struct EpochError(pub u64);

fn at(epoch: u64) -> Result<DateTime<chrono::Utc>, EpochError> {
    i64::try_from(epoch).ok().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or(EpochError(epoch))
}

/// `YYYY-MM-DD` (UTC), rpi-imager's `release_date`.
pub fn release_date(epoch: u64) -> Result<String, EpochError> {
    Ok(at(epoch)?.format("%Y-%m-%d").to_string())
}

/// `YYYY-MM-DDThh:mm:ssZ`, SPDX's `created`.
pub fn spdx_created(epoch: u64) -> Result<String, EpochError> {
    Ok(at(epoch)?.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(release_date(0).unwrap(), "1970-01-01");
        assert_eq!(spdx_created(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(release_date(315_532_800).unwrap(), "1980-01-01");
        assert_eq!(release_date(u64::MAX), Err(EpochError(u64::MAX)));
    }
}
