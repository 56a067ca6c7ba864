//! Byte sizes as the spec writes them: `1MB`, `512KB`, `1048576`. Units are
//! 1024-based whatever their spelling (`KB` = `KiB` = 1024 bytes, `MB` = `MiB`
//! = 1024²), since every size here caps a buffer in memory; a bare integer is
//! bytes.
//!
//! Owns: the spelling of sizes. Must not: know which key a size belongs to
//! (ranges are in `limits`).

/// The largest size any spelling may denote (1 GiB). Each key has its own,
/// narrower range; this one keeps every size far from overflow.
const MAX: u64 = 1024 * 1024 * 1024;

/// Parses a size such as `1MB`, `512KB`, `64KiB` or `1048576`.
pub(super) fn parse(text: &str) -> Result<u64, String> {
    parse_within(text, MAX)
        .map_err(|_| format!("invalid size `{text}`: larger than 1GB"))
        .and_then(|r| r)
}

/// The largest free-space threshold (`state.min_free_bytes`): 1 PiB. Disks
/// are larger than any buffer, so this key has its own ceiling.
pub(super) const DISK_MAX: u64 = 1 << 50;

/// Parses a disk-space size, up to [`DISK_MAX`]; `TB` is accepted too.
pub(super) fn parse_disk(text: &str) -> Result<u64, String> {
    parse_within(text, DISK_MAX)
        .map_err(|_| format!("invalid size `{text}`: larger than 1024TB"))
        .and_then(|r| r)
}

/// The outer `Err` means "larger than `max`"; the inner one a malformed size.
fn parse_within(text: &str, max: u64) -> Result<Result<u64, String>, ()> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Ok(Err(format!(
            "invalid size `{text}`: expected a number of bytes, or one followed by KB or MB"
        )));
    }
    let unit = s[digits..].trim_start();
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        // Only where a terabyte fits under the ceiling (disk thresholds).
        "t" | "tb" | "tib" if max >= 1 << 40 => 1 << 40,
        _ => {
            return Ok(Err(format!(
                "invalid size `{text}`: unknown unit `{unit}` (use B, KB or MB)"
            )));
        }
    };
    s[..digits]
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&bytes| bytes <= max)
        .map(Ok)
        .ok_or(())
}

/// The shortest exact spelling of `bytes` (`1MB`, `512KB`, `1000`), as
/// [`parse`] reads it back.
pub(super) fn format(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{}KB", bytes / KIB)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_1024_based_in_every_spelling() {
        for (text, bytes) in [
            ("1048576", 1_048_576),
            ("0", 0),
            ("1MB", 1_048_576),
            ("1 MB", 1_048_576),
            ("1mb", 1_048_576),
            ("1MiB", 1_048_576),
            ("512KB", 524_288),
            ("512k", 524_288),
            ("64KiB", 65_536),
            ("100B", 100),
            ("1GB", 1 << 30),
        ] {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn disk_sizes_reach_terabytes_and_stop_at_a_pebibyte() {
        assert_eq!(parse_disk("64MiB"), Ok(64 << 20));
        assert_eq!(parse_disk("2TB"), Ok(2 << 40));
        assert_eq!(parse_disk("0"), Ok(0));
        assert_eq!(parse_disk("1024TB"), Ok(DISK_MAX));
        assert_eq!(
            parse_disk("1025TB").unwrap_err(),
            "invalid size `1025TB`: larger than 1024TB"
        );
        assert_eq!(
            parse_disk("lots").unwrap_err(),
            "invalid size `lots`: expected a number of bytes, or one followed by KB or MB"
        );
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(
            parse("MB").unwrap_err(),
            "invalid size `MB`: expected a number of bytes, or one followed by KB or MB"
        );
        assert_eq!(
            parse("1.5MB").unwrap_err(),
            "invalid size `1.5MB`: unknown unit `.5MB` (use B, KB or MB)"
        );
        assert_eq!(
            parse("1TB").unwrap_err(),
            "invalid size `1TB`: unknown unit `TB` (use B, KB or MB)"
        );
        assert_eq!(
            parse("2GB").unwrap_err(),
            "invalid size `2GB`: larger than 1GB"
        );
        assert_eq!(
            parse("99999999999999999999999").unwrap_err(),
            "invalid size `99999999999999999999999`: larger than 1GB"
        );
        assert!(parse("").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn format_reads_back() {
        for bytes in [0, 1000, 1024, 1536, 524_288, 1_048_576, 3 << 20] {
            assert_eq!(parse(&format(bytes)), Ok(bytes));
        }
        assert_eq!(format(1_048_576), "1MB");
        assert_eq!(format(65_536), "64KB");
    }
}
