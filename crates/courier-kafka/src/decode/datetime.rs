//! Dates, times and timestamps between the numbers and ISO strings of
//! Debezium's semantic types and Courier's text forms (those of
//! [`courier_core::Value`]: PostgreSQL's ISO output with a `T`, UTC with `Z`,
//! fractional seconds without trailing zeros, ` BC` for years before 1).

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01: (year, month, day), year 0 = 1 BC.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small and positive by construction.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The earliest and latest dates PostgreSQL holds (4714-11-24 BC and
/// 5874897-12-31), in days since 1970-01-01.
pub(super) const PG_DATE_RANGE: std::ops::RangeInclusive<i64> = -2_440_588..=2_145_042_905;

/// `YYYY-MM-DD`, with ` BC` for years before 1, as PostgreSQL writes the
/// date `days` after 1970-01-01.
pub(super) fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(13);
    let bc = push_ymd(&mut out, y, m, d);
    if bc {
        out.push_str(" BC");
    }
    out
}

/// `HH:MM:SS[.ffffff]` of `micros` since midnight (up to `24:00:00`), or
/// `None` outside a day.
pub(super) fn time_text(micros: i64) -> Option<String> {
    if !(0..=DAY_US).contains(&micros) {
        return None;
    }
    let mut out = String::with_capacity(15);
    push_time(&mut out, micros);
    Some(out)
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` (with `utc`, followed by `Z`), with ` BC`
/// for years before 1, of `micros` since 1970-01-01 00:00:00.
pub(super) fn timestamp_text(micros: i64, utc: bool) -> String {
    let days = micros.div_euclid(DAY_US);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(32);
    let bc = push_ymd(&mut out, y, m, d);
    out.push('T');
    push_time(&mut out, micros.rem_euclid(DAY_US));
    if utc {
        out.push('Z');
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

/// A timestamp with a zone as Debezium's `ZonedTimestamp` writes it (ISO
/// 8601: `2024-02-29T18:29:59.500000Z`, `-0043-03-15T12:00:00Z`, an offset
/// instead of `Z`) or as Courier's own records hold it
/// (`0044-03-15T12:00:00Z BC`), in Courier's form: UTC, `Z`, fractional
/// seconds without trailing zeros. `None` when it is neither.
pub(super) fn zoned_timestamp(text: &str) -> Option<String> {
    if text == "infinity" || text == "-infinity" {
        return Some(text.to_owned());
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, rest) = text.split_once('T')?;
    let (year, month, day) = parse_date(date)?;
    let year = if bc {
        if year < 1 {
            return None;
        }
        1 - year
    } else {
        year
    };
    let (clock, offset) = split_offset(rest)?;
    let (secs, frac) = parse_clock(clock)?;
    let micros_of_day = secs * 1_000_000;
    let total = days_from_civil(year, month, day)
        .checked_mul(DAY_US)?
        .checked_add(micros_of_day)?
        .checked_sub(offset * 1_000_000)?;
    // The fraction is kept as digits (PostgreSQL has microseconds; more
    // digits than six are cut, never rounded up).
    let mut out = timestamp_text(total, true);
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        let at = out.find('Z')?;
        out.insert_str(at, &format!(".{}", &frac[..frac.len().min(6)]));
    }
    Some(out)
}

/// A time with a zone as Debezium's `ZonedTime` writes it (`11:45:06Z`,
/// `11:45:06.5Z`, or with an offset) in Courier's form of a `timetz`:
/// `HH:MM:SS[.ffffff]+00` (the same instant in UTC; the original offset is
/// not in the record).
pub(super) fn zoned_time(text: &str) -> Option<String> {
    let (clock, offset) = split_offset(text)?;
    let (secs, frac) = parse_clock(clock)?;
    let day = 86_400;
    let utc = if secs == day && offset == 0 {
        day
    } else {
        (secs - offset).rem_euclid(day)
    };
    let mut out = time_text(utc * 1_000_000)?;
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        out.push('.');
        out.push_str(&frac[..frac.len().min(6)]);
    }
    out.push_str("+00");
    Some(out)
}

/// `(year, month, day)` of `[+-]Y{4,}-MM-DD` (a `-` year is astronomical:
/// `-0043` is 44 BC).
fn parse_date(date: &str) -> Option<(i64, u32, u32)> {
    let (sign, body) = match date.as_bytes().first()? {
        b'-' => (-1, &date[1..]),
        b'+' => (1, &date[1..]),
        _ => (1, date),
    };
    let mut parts = body.splitn(3, '-');
    let y = digits(parts.next()?)?;
    let m = digits(parts.next()?)?;
    let d = digits(parts.next()?)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((sign * i64::try_from(y).ok()?, m as u32, d as u32))
}

/// `HH:MM:SS[.f*]` → (seconds since midnight, the fraction's digits).
fn parse_clock(clock: &str) -> Option<(i64, &str)> {
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut parts = hms.splitn(3, ':');
    let h = digits(parts.next()?)?;
    let m = digits(parts.next()?)?;
    let s = digits(parts.next()?)?;
    if h > 24 || m > 59 || s > 60 {
        return None;
    }
    Some((i64::try_from((h * 60 + m) * 60 + s).ok()?, frac))
}

/// Splits `clock` + `Z` or `±HH[:MM[:SS]]` into the clock and the offset
/// in seconds east of UTC.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(clock) = text.strip_suffix('Z') {
        return Some((clock, 0));
    }
    let at = text.rfind(['+', '-'])?;
    let (clock, zone) = text.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut parts = zone[1..].split(':');
    let h = digits(parts.next()?)?;
    let m = parts.next().map_or(Some(0), digits)?;
    let s = parts.next().map_or(Some(0), digits)?;
    Some((clock, sign * i64::try_from((h * 60 + m) * 60 + s).ok()?))
}

/// A non-empty run of ASCII digits as a number.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Writes `YYYY-MM-DD` of an astronomical year (years before 1 as
/// PostgreSQL's BC years, whose suffix the caller adds when this returns
/// true).
fn push_ymd(out: &mut String, y: i64, m: u32, d: u32) -> bool {
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    out.push_str(&format!("{year:04}-{m:02}-{d:02}"));
    bc
}

/// Writes `HH:MM:SS[.ffffff]` of `micros` since midnight, the fraction
/// without trailing zeros.
fn push_time(out: &mut String, micros: i64) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    out.push_str(&format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ));
    if frac > 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_the_calendar() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2024, 2, 29, 19_782),
            (1969, 12, 31, -1),
            (0, 1, 1, -719_528),
            (-43, 3, 15, -735_160),
        ] {
            assert_eq!(days_from_civil(y, m, d), days);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(date_text(-735_160), "0044-03-15 BC");
        assert_eq!(date_text(19_782), "2024-02-29");
        assert!(PG_DATE_RANGE.contains(&days_from_civil(-4713, 11, 24)));
        assert!(!PG_DATE_RANGE.contains(&-2_147_472_692));
    }

    #[test]
    fn times_and_timestamps_read_as_postgresql_writes_them() {
        assert_eq!(
            time_text(49_506_123_456).as_deref(),
            Some("13:45:06.123456")
        );
        assert_eq!(time_text(49_506_500_000).as_deref(), Some("13:45:06.5"));
        assert_eq!(time_text(86_400_000_000).as_deref(), Some("24:00:00"));
        assert_eq!(time_text(-1), None);
        assert_eq!(
            timestamp_text(1_709_251_199_999_999, false),
            "2024-02-29T23:59:59.999999"
        );
        assert_eq!(timestamp_text(-1, false), "1969-12-31T23:59:59.999999");
        assert_eq!(
            timestamp_text(-14_182_939_877_000, false),
            "1969-07-20T20:17:40.123"
        );
        assert_eq!(
            timestamp_text(-63_517_780_800_000_000, true),
            "0044-03-15T12:00:00Z BC"
        );
    }

    #[test]
    fn zoned_values_become_utc_in_courier_form() {
        assert_eq!(
            zoned_timestamp("2024-02-29T18:29:59.500000Z").as_deref(),
            Some("2024-02-29T18:29:59.5Z")
        );
        assert_eq!(
            zoned_timestamp("2024-02-29T18:29:59.000000Z").as_deref(),
            Some("2024-02-29T18:29:59Z")
        );
        assert_eq!(
            zoned_timestamp("-0043-03-15T12:00:00.000000Z").as_deref(),
            Some("0044-03-15T12:00:00Z BC")
        );
        assert_eq!(
            zoned_timestamp("0044-03-15T12:00:00Z BC").as_deref(),
            Some("0044-03-15T12:00:00Z BC")
        );
        assert_eq!(
            zoned_timestamp("2024-01-01T01:30:00.25+02:00").as_deref(),
            Some("2023-12-31T23:30:00.25Z")
        );
        assert_eq!(
            zoned_timestamp("+10000-01-01T00:00:00Z").as_deref(),
            Some("10000-01-01T00:00:00Z")
        );
        assert_eq!(zoned_timestamp("-infinity").as_deref(), Some("-infinity"));
        assert_eq!(zoned_timestamp("2024-13-01T00:00:00Z"), None);
        assert_eq!(zoned_timestamp("yesterday"), None);
        assert_eq!(zoned_time("11:45:06Z").as_deref(), Some("11:45:06+00"));
        assert_eq!(
            zoned_time("23:30:00.250-01:30").as_deref(),
            Some("01:00:00.25+00")
        );
        assert_eq!(zoned_time("24:00:00Z").as_deref(), Some("24:00:00+00"));
    }
}
