//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC), as in
//! crontab(5): `*`, `a`, `a-b`, `*/n`, `a-b/n`, lists with `,`, month and weekday names, and
//! `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`. When both day fields are restricted a day
//! matching either one matches, as cron does.
use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

/// Why an expression was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad cron expression {expr:?}: {reason}")]
pub struct CronError {
    expr: String,
    reason: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `expr`.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |reason: String| CronError {
            expr: expr.to_string(),
            reason,
        };
        let text = expr.trim();
        let expanded = match text {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        }
        let minutes = field(fields[0], 0, 59, &[]).map_err(|r| err(format!("minute: {r}")))?;
        let hours = field(fields[1], 0, 23, &[]).map_err(|r| err(format!("hour: {r}")))?;
        let days = field(fields[2], 1, 31, &[]).map_err(|r| err(format!("day of month: {r}")))?;
        let months = field(fields[3], 1, 12, &MONTHS).map_err(|r| err(format!("month: {r}")))?;
        let mut weekdays =
            field(fields[4], 0, 7, &WEEKDAYS).map_err(|r| err(format!("day of week: {r}")))?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            text: text.to_string(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            // As in Vixie cron: a day field starting with `*` (also `*/n`) does not restrict.
            days_any: fields[2].starts_with('*'),
            weekdays_any: fields[4].starts_with('*'),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `after` that matches (None if none within 5 years).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut t = start;
        let limit = start + Duration::days(5 * 366);
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(&t) {
                t = (t + Duration::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = (t + Duration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    /// How many times fire between `from` (inclusive) and `to` (exclusive), counting at most
    /// `cap`.
    pub fn count_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u32) -> u32 {
        let mut n = 0;
        let mut t = from - Duration::minutes(1);
        while n < cap {
            match self.next_after(t) {
                Some(x) if x < to => {
                    n += 1;
                    t = x;
                }
                _ => break,
            }
        }
        n
    }
}

/// Parses one field into a bit set of allowed values.
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months are 1-based, weekdays 0-based.
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 || step > max {
                    return Err(format!("step {step} is outside 1-{max}"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // "5/15" means from 5 to the end, every 15.
            (v, if part.contains('/') { max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn next_occurrences_of_common_expressions() -> Result<(), CronError> {
        let daily2 = Cron::parse("0 2 * * *")?;
        assert_eq!(
            daily2.next_after(at("2026-11-25T01:59:30Z")),
            Some(at("2026-11-25T02:00:00Z"))
        );
        assert_eq!(
            daily2.next_after(at("2026-11-25T02:00:00Z")),
            Some(at("2026-11-26T02:00:00Z"))
        );
        let every = Cron::parse("* * * * *")?;
        assert_eq!(
            every.next_after(at("2026-11-25T10:00:59Z")),
            Some(at("2026-11-25T10:01:00Z"))
        );
        let quarter = Cron::parse("*/15 9-17 * * mon-fri")?;
        // Saturday 28 Nov 2026 → Monday 30 Nov 09:00.
        assert_eq!(
            quarter.next_after(at("2026-11-27T17:50:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
        let feb29 = Cron::parse("0 0 29 2 *")?;
        assert_eq!(
            feb29.next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // Both day fields restricted: either matches (1st of month or any Sunday).
        let either = Cron::parse("0 0 1 * 7")?;
        assert_eq!(
            either.next_after(at("2026-11-25T00:00:00Z")),
            Some(at("2026-11-29T00:00:00Z"))
        );
        assert_eq!(
            Cron::parse("@daily")?.next_after(at("2026-11-25T13:00:00Z")),
            Some(at("2026-11-26T00:00:00Z"))
        );
        assert_eq!(
            every.count_between(at("2026-11-25T10:00:00Z"), at("2026-11-25T10:05:00Z"), 100),
            5
        );
        // `*/2` in the day of month does not restrict: only Sundays on odd days match (AND).
        let odd_sundays = Cron::parse("0 0 */2 * sun")?;
        assert_eq!(
            odd_sundays.next_after(at("2026-11-25T00:00:00Z")),
            Some(at("2026-11-29T00:00:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 30 2 *")?.next_after(at("2026-11-25T00:00:00Z")),
            None
        );
        Ok(())
    }

    #[test]
    fn bad_expressions_are_refused_with_the_field() {
        for (expr, needle) in [
            ("0 2 * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step 0"),
            ("*/4294967295 * * * *", "step 4294967295"),
            ("5-1 * * * *", "backwards"),
            ("a * * * *", "not a number"),
        ] {
            match Cron::parse(expr) {
                Ok(c) => panic!("{expr} parsed as {c:?}"),
                Err(e) => assert!(e.to_string().contains(needle), "{expr}: {e}"),
            }
        }
    }
}
