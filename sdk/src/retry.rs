//! When may a rate-limited key be used again? Parsers for the hints
//! upstreams give: the standard `Retry-After` header (delay seconds or an
//! HTTP-date) and the Go-style durations of `x-ratelimit-reset-*` headers
//! (`2m59.56s`, `7.66s`, `120ms`) used by OpenAI, Groq and others, and
//! the RFC 3339 timestamps other providers put in reset headers
//! (`2026-04-09T12:00:30Z`); [`parse_reset`] takes either.
//!
//! Delays handed to the host are clamped to
//! [`MIN_RETRY_AFTER_MS`]..=[`MAX_RETRY_AFTER_MS`]; unparseable values give
//! `None` (the host then applies its own default).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Headers, header};

/// Shortest delay reported to the host (1 s).
pub const MIN_RETRY_AFTER_MS: u64 = 1_000;
/// Longest delay reported to the host (10 min).
pub const MAX_RETRY_AFTER_MS: u64 = 600_000;

/// Clamps a delay to [`MIN_RETRY_AFTER_MS`]..=[`MAX_RETRY_AFTER_MS`].
pub fn clamp_retry_after_ms(ms: u64) -> u64 {
    ms.clamp(MIN_RETRY_AFTER_MS, MAX_RETRY_AFTER_MS)
}

/// The clamped delay in milliseconds named by the `retry-after` header of
/// `headers`, relative to the current time; `None` when the header is
/// missing or garbage.
pub fn retry_after_ms(headers: &Headers) -> Option<u64> {
    parse_retry_after(header(headers, "retry-after")?, SystemTime::now())
}

/// Parses a `Retry-After` value: non-negative delay seconds (integer or
/// fractional, e.g. `7` or `1.5`) or an HTTP-date (a date in the past means
/// "now"). Returns the delay in milliseconds relative to `now`, clamped to
/// [`MIN_RETRY_AFTER_MS`]..=[`MAX_RETRY_AFTER_MS`]; `None` for garbage.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Some(ms) = parse_seconds_ms(value) {
        return Some(clamp_retry_after_ms(ms));
    }
    let at = parse_http_date(value)?;
    let ms = at.duration_since(now).map_or(0, millis);
    Some(clamp_retry_after_ms(ms))
}

/// `"7"` → 7000, `"1.5"` → 1500 (rounded up); anything but digits with at
/// most one `.` is rejected (no sign, exponent, `inf` or `NaN`).
fn parse_seconds_ms(value: &str) -> Option<u64> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    let seconds: f64 = value.parse().ok()?;
    Some((seconds * 1000.0).ceil().min(u64::MAX as f64) as u64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a Go-style duration as used by `x-ratelimit-reset-requests` and
/// `x-ratelimit-reset-tokens`: a sequence of decimal numbers with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` (`2m59.56s`, `7.66s`, `120ms`,
/// `1h2m`). A bare number is taken as seconds. Returns milliseconds,
/// rounded up and not clamped; `None` for garbage.
pub fn parse_reset_duration(value: &str) -> Option<u64> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    if let Some(ms) = parse_seconds_ms(rest) {
        return Some(ms);
    }
    let mut total_ms = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number.matches('.').count() > 1 || number == "." {
            return None;
        }
        let amount: f64 = number.parse().ok()?;
        let (scale, unit_len) = [
            ("ms", 1.0),
            ("us", 1e-3),
            ("µs", 1e-3),
            ("ns", 1e-6),
            ("h", 3_600_000.0),
            ("m", 60_000.0),
            ("s", 1_000.0),
        ]
        .iter()
        .find(|(unit, _)| tail.starts_with(unit))
        .map(|(unit, scale)| (*scale, unit.len()))?;
        total_ms += amount * scale;
        rest = &tail[unit_len..];
    }
    Some(total_ms.ceil().min(u64::MAX as f64) as u64)
}

/// Parses an RFC 3339 timestamp: `2026-04-09T12:00:30Z`,
/// `2026-04-09T14:00:30.250+02:00` (`t` or a space may stand for `T`, `z`
/// for `Z`; fractions of a second are kept to the millisecond). `None` for
/// anything else or a time before 1970.
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = value.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse().ok() } else { None }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, m, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &value[19..];
    let mut millis = 0_u64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..len.min(3)]);
        millis = padded.parse().ok()?;
        rest = &fraction[len..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            if oh.len() != 2 || om.len() != 2 || !oh.bytes().chain(om.bytes()).all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let local = days_from_civil(i64::from(year), month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s);
    let secs = u64::try_from(local - offset_secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// Milliseconds from `now` until the reset a rate-limit header names, as a
/// duration (`1m30s`, `6s`, `250ms`, bare seconds; see
/// [`parse_reset_duration`]) or an RFC 3339 timestamp (see
/// [`parse_rfc3339`]; a time already past gives 0). Not clamped: pass the
/// result through [`clamp_retry_after_ms`] before handing it to the host.
pub fn parse_reset(value: &str, now: SystemTime) -> Option<u64> {
    if let Some(ms) = parse_reset_duration(value) {
        return Some(ms);
    }
    let at = parse_rfc3339(value)?;
    Some(at.duration_since(now).map_or(0, millis))
}

/// Parses an HTTP-date (RFC 9110): the preferred IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms. The weekday is not checked.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        [wkday, day, month, year, time, "GMT"] if wkday.ends_with(',') => {
            (day.parse().ok()?, *month, year.parse().ok()?, *time)
        }
        [wkday, date, time, "GMT"] if wkday.ends_with(',') => {
            let mut fields = date.split('-');
            let (day, month, year) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() {
                return None;
            }
            let year: i64 = year.parse().ok()?;
            let year = match (year, year < 100) {
                (y, true) if y < 70 => 2000 + y,
                (y, true) => 1900 + y,
                (y, false) => y,
            };
            (day.parse().ok()?, month, year, *time)
        }
        [_wkday, month, day, time, year] => (day.parse().ok()?, *month, year.parse().ok()?, *time),
        _ => return None,
    };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == month)? as u32
        + 1;
    let mut hms = time.split(':');
    let (h, m, s): (u32, u32, u32) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delay_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(7_000));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(1_500));
        assert_eq!(parse_retry_after("2.0001", now), Some(2_001));
        assert_eq!(parse_retry_after("0", now), Some(MIN_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("0.2", now), Some(MIN_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(MAX_RETRY_AFTER_MS));
    }

    #[test]
    fn garbage_is_none() {
        let now = SystemTime::now();
        for bad in ["", "soon", "-1", "+3", "1e3", "inf", "NaN", "1.2.3", ".", "7s", "Sun, 06 Nov 1994 08:49:37"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates() {
        // 1994-11-06T08:49:37Z
        let t = 784_111_777;
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(at(t)));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(at(t)));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(at(t)));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(parse_http_date("Wed, 29 Feb 2028 23:59:59 GMT"), Some(at(1_835_481_599)));
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = at(784_111_777);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(30_000));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now), Some(MIN_RETRY_AFTER_MS));
        assert_eq!(parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now), Some(MAX_RETRY_AFTER_MS));
    }

    #[test]
    fn retry_after_header_lookup_is_case_insensitive() {
        let headers = vec![("Retry-After".to_owned(), "3".to_owned())];
        assert_eq!(retry_after_ms(&headers), Some(3_000));
        assert_eq!(retry_after_ms(&Vec::new()), None);
    }

    #[test]
    fn rfc3339_timestamps() {
        // 2026-04-09T12:00:30Z
        let t = 1_775_736_030;
        assert_eq!(parse_rfc3339("2026-04-09T12:00:30Z"), Some(at(t)));
        assert_eq!(parse_rfc3339("2026-04-09t12:00:30z"), Some(at(t)));
        assert_eq!(parse_rfc3339("2026-04-09 14:00:30+02:00"), Some(at(t)));
        assert_eq!(parse_rfc3339("2026-04-09T11:30:30-00:30"), Some(at(t)));
        assert_eq!(parse_rfc3339("2026-04-09T12:00:30.25Z"), Some(at(t) + Duration::from_millis(250)));
        assert_eq!(parse_rfc3339("2026-04-09T12:00:30.123456789Z"), Some(at(t) + Duration::from_millis(123)));
        assert_eq!(parse_rfc3339("2028-02-29T00:00:00Z"), Some(at(1_835_395_200)));
        for bad in [
            "",
            "2026-04-09",
            "2026-04-09T12:00:30",
            "2026-04-09T12:00:30+0200",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-09T24:00:00Z",
            "2026-04-09T12:00:30.Z",
            "1969-12-31T23:59:59Z",
            "2026-04-09T12:00:30Zjunk",
            "2026-0a-09T12:00:30Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reset_hints_are_durations_or_timestamps() {
        let now = at(1_775_736_000);
        assert_eq!(parse_reset("1m30s", now), Some(90_000));
        assert_eq!(parse_reset("6s", now), Some(6_000));
        assert_eq!(parse_reset("250ms", now), Some(250));
        assert_eq!(parse_reset("2026-04-09T12:00:30Z", now), Some(30_000));
        assert_eq!(parse_reset("2026-04-09T11:00:00Z", now), Some(0), "a past reset is now");
        assert_eq!(parse_reset("tomorrow", now), None);
    }

    #[test]
    fn reset_durations() {
        assert_eq!(parse_reset_duration("2m59.56s"), Some(179_560));
        assert_eq!(parse_reset_duration("7.66s"), Some(7_660));
        assert_eq!(parse_reset_duration("120ms"), Some(120));
        assert_eq!(parse_reset_duration("1h2m3s"), Some(3_723_000));
        assert_eq!(parse_reset_duration("1500us"), Some(2));
        assert_eq!(parse_reset_duration("0s"), Some(0));
        assert_eq!(parse_reset_duration("12"), Some(12_000));
        for bad in ["", "s", "5x", "1..2s", "-3s", "3s garbage", "ms"] {
            assert_eq!(parse_reset_duration(bad), None, "{bad:?}");
        }
    }
}
