//! UTC calendar arithmetic for the timestamps exporters print and parse
//! (the debug exporter's Go-style times, the file exporter's backup names,
//! HTTP `Retry-After` dates), without a date-time dependency. Dates are
//! proleptic Gregorian; the day-count conversions are Howard Hinnant's
//! `days_from_civil` and `civil_from_days`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time split into UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    /// Within the second.
    pub nanos: u32,
}

impl UtcTime {
    /// Times before 1970 are taken as 1970-01-01 00:00:00.
    pub(crate) fn of(at: SystemTime) -> UtcTime {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: (rem % 3600) / 60,
            second: rem % 60,
            nanos: since.subsec_nanos(),
        }
    }
}

/// The time of a UTC date and clock reading; `None` before 1970 or past
/// what `SystemTime` holds. The fields are not range-checked: callers
/// check what their format allows.
pub(crate) fn unix_time(
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
) -> Option<SystemTime> {
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_across_leap_days_and_centuries() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2020, 2, 11),
            (2100, 3, 1),
            (2024, 12, 31),
        ] {
            let at = unix_time(y, m, d, 20, 26, 13).unwrap();
            let utc = UtcTime::of(at + Duration::from_nanos(789));
            assert_eq!(
                (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.nanos),
                (y, m, d, 20, 26, 13, 789)
            );
        }
        assert_eq!(unix_time(1970, 1, 1, 0, 0, 0), Some(UNIX_EPOCH));
        assert_eq!(unix_time(1969, 12, 31, 0, 0, 0), None);
    }
}
