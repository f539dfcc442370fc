//! Intervals in Courier's form, PostgreSQL's `IntervalStyle=iso_8601`
//! (`P1Y2M3DT4H5M6S`, zero fields left out, `PT0S` for zero), from
//! Debezium's `io.debezium.time.Interval` strings (every field written:
//! `P1Y2M3DT4H5M6.5S`) and `MicroDuration` microseconds.

/// The ISO 8601 duration `text` (with or without zero fields, a sign on any
/// field, a fraction on the seconds) in PostgreSQL's iso_8601 form, or
/// `None` when it is not one.
pub(super) fn iso_text(text: &str) -> Option<String> {
    let body = text.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (body, None),
    };
    let mut out = String::from("P");
    let mut date_fields = fields(date, &['Y', 'M', 'D'])?;
    let time_fields = match time {
        Some(t) => fields(t, &['H', 'M', 'S'])?,
        None => Vec::new(),
    };
    if time == Some("") {
        return None;
    }
    date_fields.retain(|(n, _)| !is_zero(n));
    for (n, unit) in &date_fields {
        out.push_str(n);
        out.push(*unit);
    }
    let time_fields: Vec<_> = time_fields
        .into_iter()
        .filter(|(n, _)| !is_zero(n))
        .collect();
    if !time_fields.is_empty() {
        out.push('T');
        for (n, unit) in &time_fields {
            out.push_str(&number_text(n));
            out.push(*unit);
        }
    }
    if out == "P" {
        return Some("PT0S".to_owned());
    }
    Some(out)
}

/// An interval of `micros` microseconds as PostgreSQL writes one without
/// months or days: `PT730H30M0.000001S`, signs on every field, `PT0S`.
pub(super) fn micros_text(micros: i64) -> String {
    if micros == 0 {
        return "PT0S".to_owned();
    }
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let hours = abs / 3_600_000_000;
    let minutes = abs / 60_000_000 % 60;
    let secs = abs / 1_000_000 % 60;
    let frac = abs % 1_000_000;
    let mut out = String::from("PT");
    if hours > 0 {
        out.push_str(&format!("{sign}{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{sign}{minutes}M"));
    }
    if secs > 0 || frac > 0 {
        out.push_str(&format!("{sign}{secs}"));
        if frac > 0 {
            let digits = format!("{frac:06}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push('S');
    }
    out
}

/// The `number unit` pairs of one side of a duration, units in the given
/// order (each at most once); `None` when it does not parse.
fn fields<'a>(text: &'a str, units: &[char]) -> Option<Vec<(&'a str, char)>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let at = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, tail) = rest.split_at(at);
        let unit = tail.chars().next()?;
        let position = units[next_unit..].iter().position(|u| *u == unit)? + next_unit;
        next_unit = position + 1;
        if !is_number(number, unit == 'S') {
            return None;
        }
        out.push((number, unit));
        rest = &tail[1..];
    }
    Some(out)
}

fn is_number(text: &str, fraction_allowed: bool) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if fraction_allowed => (i, f),
        Some(_) => return false,
        None => (body, ""),
    };
    !int.is_empty() && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

fn is_zero(number: &str) -> bool {
    number.bytes().all(|b| matches!(b, b'0' | b'.' | b'-'))
}

/// Seconds without trailing fractional zeros (`6.50` → `6.5`, `6.0` → `6`).
fn number_text(number: &str) -> String {
    match number.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_owned()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => number.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debezium_interval_strings_read_as_postgresql_writes_them() {
        assert_eq!(
            iso_text("P1Y2M3DT4H5M6S").as_deref(),
            Some("P1Y2M3DT4H5M6S")
        );
        assert_eq!(iso_text("P0Y0M0DT0H0M0S").as_deref(), Some("PT0S"));
        assert_eq!(
            iso_text("P-1Y-2M3DT-4H-5M-6.5S").as_deref(),
            Some("P-1Y-2M3DT-4H-5M-6.5S")
        );
        assert_eq!(
            iso_text("P0Y1M0DT0H0M0.000001S").as_deref(),
            Some("P1MT0.000001S")
        );
        assert_eq!(iso_text("P0Y0M1DT100H0M0S").as_deref(), Some("P1DT100H"));
        assert_eq!(iso_text("PT0S").as_deref(), Some("PT0S"));
        assert_eq!(iso_text("P1D").as_deref(), Some("P1D"));
        assert_eq!(iso_text("P1DT").as_deref(), None);
        assert_eq!(iso_text("1 day"), None);
        assert_eq!(iso_text("P1S"), None, "seconds belong after T");
        assert_eq!(iso_text("P1.5D"), None);
    }

    #[test]
    fn microsecond_durations_are_hours_minutes_seconds() {
        assert_eq!(micros_text(0), "PT0S");
        assert_eq!(micros_text(2_629_800_000_001), "PT730H30M0.000001S");
        assert_eq!(micros_text(86_400_000_000), "PT24H");
        assert_eq!(micros_text(-3_723_500_000), "PT-1H-2M-3.5S");
    }
}
