//! Dates, times and timestamps in PostgreSQL's ISO output style.
//!
//! Values keep PostgreSQL's digits (including the fractional seconds as
//! written); only the shape changes: `T` between date and time, and
//! `timestamptz` converted to UTC with a `Z`. Dates before year 1 keep
//! PostgreSQL's ` BC` suffix, since ISO 8601 has no agreed form for them.

use std::fmt::Write;

type Result<T> = std::result::Result<T, &'static str>;

/// `YYYY-MM-DD[ BC]`, `infinity` or `-infinity`, returned as written.
pub(super) fn date(text: &str) -> Result<String> {
    if is_infinity(text) {
        return Ok(text.to_owned());
    }
    let mut c = Cursor::new(text);
    c.date()?;
    c.era()?;
    c.end()?;
    Ok(text.to_owned())
}

/// `HH:MM:SS[.ffffff]`, with a UTC offset when `with_zone`, returned as written.
pub(super) fn time(text: &str, with_zone: bool) -> Result<String> {
    let mut c = Cursor::new(text);
    c.time()?;
    if with_zone {
        c.offset()?;
    }
    c.end()?;
    Ok(text.to_owned())
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][ BC]` → `YYYY-MM-DDTHH:MM:SS[.ffffff][ BC]`.
pub(super) fn timestamp(text: &str) -> Result<String> {
    if is_infinity(text) {
        return Ok(text.to_owned());
    }
    let mut c = Cursor::new(text);
    c.date()?;
    let sep = c.i;
    c.expect(b' ')?;
    c.time()?;
    c.era()?;
    c.end()?;
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..sep]);
    out.push('T');
    out.push_str(&text[sep + 1..]);
    Ok(out)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]` → the same instant in
/// UTC as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z[ BC]`.
pub(super) fn timestamptz(text: &str) -> Result<String> {
    if is_infinity(text) {
        return Ok(text.to_owned());
    }
    let mut c = Cursor::new(text);
    let (year, month, day) = c.date()?;
    let sep = c.i;
    c.expect(b' ')?;
    let (hour, minute, second) = c.time()?;
    let time_end = c.i;
    let frac = &text[sep + 9..time_end];
    let offset = c.offset()?;
    let bc = c.era()?;
    c.end()?;
    let era = if bc { " BC" } else { "" };
    let mut out = String::with_capacity(text.len() + 1);
    if offset == 0 {
        out.push_str(&text[..sep]);
        out.push('T');
        out.push_str(&text[sep + 1..time_end]);
        out.push('Z');
        out.push_str(era);
        return Ok(out);
    }
    let astro_year = if bc { 1 - year } else { year };
    let secs = days_from_civil(astro_year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - i64::from(offset);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (year_out, era) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year_out:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z{era}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    Ok(out)
}

/// 2000-01-01, PostgreSQL's epoch for binary dates and timestamps, in days
/// since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// A `date` in binary form (days since 2000-01-01) as [`date`] returns
/// its text form.
pub(super) fn date_from_days(days: i32) -> String {
    match days {
        i32::MAX => return "infinity".to_owned(),
        i32::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
    let mut out = String::with_capacity(13);
    let bc = push_ymd(&mut out, y, m, d);
    if bc {
        out.push_str(" BC");
    }
    out
}

/// A `timestamp` (or, with `utc`, a `timestamptz`) in binary form
/// (microseconds since 2000-01-01 00:00:00 UTC) as [`timestamp`] /
/// [`timestamptz`] return its text form: fractional seconds without
/// trailing zeros, as PostgreSQL writes them.
pub(super) fn timestamp_from_micros(micros: i64, utc: bool) -> String {
    match micros {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400) + PG_EPOCH_DAYS);
    let rem = secs.rem_euclid(86_400) as u32;
    let mut out = String::with_capacity(32);
    let bc = push_ymd(&mut out, y, m, d);
    out.push('T');
    push_digits(&mut out, rem / 3600, 2);
    out.push(':');
    push_digits(&mut out, rem / 60 % 60, 2);
    out.push(':');
    push_digits(&mut out, rem % 60, 2);
    if frac > 0 {
        let (mut value, mut width) = (frac, 6);
        while value % 10 == 0 {
            value /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(&mut out, value, width);
    }
    if utc {
        out.push('Z');
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

/// Writes `YYYY-MM-DD` (years before 1 as PostgreSQL's ` BC` years, whose
/// suffix the caller adds when this returns true).
fn push_ymd(out: &mut String, y: i64, m: u32, d: u32) -> bool {
    let (year, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    // Binary dates and timestamps stay far inside u32 years.
    push_digits(out, year as u32, 4);
    out.push('-');
    push_digits(out, m, 2);
    out.push('-');
    push_digits(out, d, 2);
    bc
}

/// Writes `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

fn is_infinity(text: &str) -> bool {
    text == "infinity" || text == "-infinity"
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
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

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err("unexpected character")
        }
    }

    fn number(&mut self, min: usize, max: usize, limit: u32) -> Result<u32> {
        let start = self.i;
        let mut v: u32 = 0;
        while self.i < self.b.len() && self.i - start < max && self.b[self.i].is_ascii_digit() {
            v = v * 10 + u32::from(self.b[self.i] - b'0');
            self.i += 1;
        }
        if self.i - start < min {
            return Err("missing digits");
        }
        if v > limit {
            return Err("field out of range");
        }
        Ok(v)
    }

    fn date(&mut self) -> Result<(i64, u32, u32)> {
        let year = self.number(4, 9, 999_999_999)?;
        self.expect(b'-')?;
        let month = self.number(2, 2, 12)?;
        self.expect(b'-')?;
        let day = self.number(2, 2, 31)?;
        if month == 0 || day == 0 {
            return Err("field out of range");
        }
        Ok((i64::from(year), month, day))
    }

    fn time(&mut self) -> Result<(u32, u32, u32)> {
        let h = self.number(2, 2, 24)?;
        self.expect(b':')?;
        let m = self.number(2, 2, 59)?;
        self.expect(b':')?;
        let s = self.number(2, 2, 60)?;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.number(1, 9, u32::MAX)?;
        }
        Ok((h, m, s))
    }

    /// `±HH[:MM[:SS]]` as seconds east of UTC.
    fn offset(&mut self) -> Result<i32> {
        let sign = match self.b.get(self.i) {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err("missing UTC offset"),
        };
        self.i += 1;
        let mut secs = self.number(2, 2, 15)? * 3600;
        for unit in [60, 1] {
            if self.b.get(self.i) != Some(&b':') {
                break;
            }
            self.i += 1;
            secs += self.number(2, 2, 59)? * unit;
        }
        Ok(sign * secs as i32)
    }

    /// An optional ` BC` suffix.
    fn era(&mut self) -> Result<bool> {
        if self.b[self.i..] == *b" BC" {
            self.i += 3;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn end(&self) -> Result<()> {
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err("unexpected trailing characters")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_dates_and_timestamps_read_as_postgresql_writes_them() {
        assert_eq!(date_from_days(0), "2000-01-01");
        assert_eq!(date_from_days(-730_119), "0001-01-01");
        assert_eq!(date_from_days(-730_120), "0001-12-31 BC");
        assert_eq!(date_from_days(i32::MAX), "infinity");
        assert_eq!(timestamp_from_micros(0, false), "2000-01-01T00:00:00");
        assert_eq!(
            timestamp_from_micros(-1, true),
            "1999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            timestamp_from_micros(86_400_000_000 + 500_000, false),
            "2000-01-02T00:00:00.5"
        );
        assert_eq!(timestamp_from_micros(i64::MIN, true), "-infinity");
    }

    #[test]
    fn civil_days_round_trip() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 11_017),
            (1969, 12, 31, -1),
            (0, 1, 1, -719_528),
            (0, 12, 31, -719_163),
        ] {
            assert_eq!(days_from_civil(y, m, d), days);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
    }
}
