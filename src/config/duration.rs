//! Human durations as the spec writes them: `500ms`, `30s`, `5m`, `1h30m`, `24h`,
//! `30d`, `1w`. A bare integer is seconds.

use std::time::Duration;

/// The longest duration any spelling may denote (100 years). Each key has its
/// own, narrower range; this one keeps every duration far from overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration such as `90s`, `1h30m` or `30d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let too_large = || format!("invalid duration `{text}`: longer than 100 years");
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(secs) if secs <= MAX.as_secs() => Ok(Duration::from_secs(secs)),
            _ => Err(too_large()),
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number before `{rest}`"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit (use ms, s, m, h, d or w)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h, d or w)"
                ));
            }
        };
        let secs = number * scale;
        // Checked before converting: `from_secs_f64` panics on overflow.
        if !secs.is_finite() || secs > MAX.as_secs_f64() {
            return Err(too_large());
        }
        total = total
            .checked_add(Duration::from_secs_f64(secs))
            .filter(|total| *total <= MAX)
            .ok_or_else(too_large)?;
    }
    Ok(total)
}

/// Formats a duration compactly (`1h30m`, `45s`, `250ms`) for messages and `config show`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, secs: f64) {
        assert_eq!(
            parse(input).unwrap(),
            Duration::from_secs_f64(secs),
            "{input}"
        );
    }

    #[test]
    fn parses_the_spec_forms() {
        check("60s", 60.0);
        check("5m", 300.0);
        check("24h", 86_400.0);
        check("30d", 2_592_000.0);
        check("1h30m", 5400.0);
        check("500ms", 0.5);
        check("1.5s", 1.5);
        check("90", 90.0);
        check("1w", 604_800.0);
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert_eq!(
            parse("5x").unwrap_err(),
            "invalid duration `5x`: unknown unit `x` (use ms, s, m, h, d or w)"
        );
        assert!(parse("").is_err());
        assert_eq!(
            parse("36501d").unwrap_err(),
            "invalid duration `36501d`: longer than 100 years"
        );
        assert_eq!(
            parse("18446744073709551615").unwrap_err(),
            "invalid duration `18446744073709551615`: longer than 100 years"
        );
        assert_eq!(
            parse("99999999999999999999999").unwrap_err(),
            "invalid duration `99999999999999999999999`: longer than 100 years"
        );
        assert_eq!(
            parse(&"36000d".repeat(2)).unwrap_err(),
            "invalid duration `36000d36000d`: longer than 100 years"
        );
        assert_eq!(parse("36500d").unwrap(), MAX);
        assert_eq!(parse("3153600000").unwrap(), MAX);
        assert!(parse("m").is_err());
        assert!(parse("1.2.3s").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(86_400 * 30)), "30d");
    }
}
