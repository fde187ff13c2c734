//! When an agent's quota comes back, read from the limit message it printed last: the clock
//! times and waits of Claude Code, Codex and Gemini CLI, and an HTTP `retry-after`.
//!
//! Time zones: a time followed by `(UTC)`, `UTC`, `GMT` or a `+hh:mm` offset is read in that
//! zone; a time with no zone (Codex prints local time; Claude Code's documented examples show
//! none) is read in the machine's local offset; a named IANA zone such as `(Europe/Paris)` is
//! read in that zone, with its daylight saving time on the date of the reset, from the IANA
//! database that `jiff` embeds (its bundled copy only: core reads no files). An unknown name
//! leaves the reset unknown, and the loop falls back to the doubling backoff.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Timelike, Utc,
};
use jiff::tz::{AmbiguousOffset, TimeZone as Zone};

/// The machine's zone, as the caller knows it.
#[derive(Debug, Clone)]
pub struct LocalZone {
    pub offset: FixedOffset,
    /// The IANA name (from `TZ`), if known: `Europe/Paris` printed by an agent is resolved when
    /// it is this one.
    pub name: Option<String>,
}

impl LocalZone {
    pub fn utc() -> Self {
        LocalZone {
            offset: FixedOffset::east_opt(0).expect("zero offset"),
            name: Some("UTC".into()),
        }
    }
}

/// How many of the last non-empty lines of the agent's output count as its final error: the
/// limit messages are one or two lines (Claude Code adds a `/login` or `/upgrade` line), and
/// anything further up is work output, possibly a file the agent echoed.
pub const FINAL_LINES: usize = 6;

/// The last `FINAL_LINES` non-empty lines of `tail`.
pub fn final_output(tail: &str) -> String {
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(FINAL_LINES);
    lines[from..].join("\n")
}

/// The time the quota resets, if the final output says it in a form we can place in time.
pub fn reset_time(
    final_output: &str,
    now: DateTime<Utc>,
    zone: &LocalZone,
) -> Option<DateTime<Utc>> {
    let text = final_output.to_lowercase();
    for line in text.lines().rev() {
        if let Some(at) = epoch_suffix(line) {
            return Some(at);
        }
        if let Some(wait) = wait_in(line) {
            return Some(now + wait);
        }
        if let Some(at) = clock_time(line, now, zone) {
            return Some(at);
        }
    }
    None
}

/// `Claude AI usage limit reached|1750708800` (anthropics/claude-code #2490, #6119): a pipe and
/// a Unix epoch.
fn epoch_suffix(line: &str) -> Option<DateTime<Utc>> {
    let (_, after) = line.split_once("limit reached|")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 9 {
        return None;
    }
    Utc.timestamp_opt(digits.parse().ok()?, 0).single()
}

/// A wait: Codex's older `try again in 3 days 6 hours 57 minutes`, Gemini's `Your quota will
/// reset after 19h14m47s` and `Please retry in 5s`, and an HTTP `retry-after: 30`.
fn wait_in(line: &str) -> Option<Duration> {
    const MARKERS: [&str; 5] = [
        "try again in ",
        "retry in ",
        "reset after ",
        "retry-after:",
        "retry after ",
    ];
    MARKERS.iter().find_map(|marker| {
        let (_, after) = line.split_once(marker)?;
        parse_wait(after, *marker == "retry-after:")
    })
}

/// `3 days 6 hours 57 minutes`, `19h14m47s`, `1h 23m`, `5s`; a bare number is seconds only
/// where `bare_is_seconds` (the HTTP header).
fn parse_wait(text: &str, bare_is_seconds: bool) -> Option<Duration> {
    let mut total = 0i64;
    let mut found = false;
    let mut rest = text.trim_start();
    loop {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            break;
        }
        let value: i64 = digits.parse().ok()?;
        rest = rest[digits.len()..].trim_start();
        let unit: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        let seconds = match unit.as_str() {
            "d" | "day" | "days" => 86_400,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "" if bare_is_seconds && !found => 1,
            _ => break,
        };
        total = total.checked_add(value.checked_mul(seconds)?)?;
        found = true;
        rest = rest[unit.len()..].trim_start_matches([',', ' ']);
        rest = rest.strip_prefix("and ").unwrap_or(rest);
    }
    found.then(|| Duration::seconds(total))
}

/// A clock time after `resets`, `reset at` or `try again at`: Claude Code's `resets 3:45pm`,
/// `resets Mon 12:00am`, `resets 8am (Europe/London)`, `resets Jan 30, 11:30am (Asia/Calcutta)`,
/// `Your limit will reset at 3pm (America/Bogota)`, the gateway's `resets 2026-08-09 00:00 UTC`;
/// Codex's `try again at 3:28 PM` and `try again at Aug 8th, 2026 12:30 PM`.
fn clock_time(line: &str, now: DateTime<Utc>, zone: &LocalZone) -> Option<DateTime<Utc>> {
    const MARKERS: [&str; 5] = [
        "resets at ",
        "reset at ",
        "resets ",
        "try again at ",
        "access resets at ",
    ];
    let after = MARKERS
        .iter()
        .filter_map(|m| line.split_once(m).map(|(_, a)| a))
        .next()?;
    let mut words: Vec<&str> = after
        .split_whitespace()
        .map(|w| w.trim_end_matches([',', '.', ';']))
        .collect();
    words.retain(|w| !w.is_empty());
    let mut at = 0;
    let mut date = DateSpec::None;
    if let Some(day) = words.get(at).and_then(|w| weekday(w)) {
        date = DateSpec::Weekday(day);
        at += 1;
    } else if let Some(d) = words
        .get(at)
        .and_then(|w| NaiveDate::parse_from_str(w, "%Y-%m-%d").ok())
    {
        date = DateSpec::Full(d);
        at += 1;
    } else if let Some(month) = words.get(at).and_then(|w| month(w)) {
        let day: u32 = words
            .get(at + 1)?
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse()
            .ok()?;
        at += 2;
        let year = words
            .get(at)
            .and_then(|w| (w.len() == 4).then(|| w.parse::<i32>().ok()).flatten());
        if year.is_some() {
            at += 1;
        }
        date = DateSpec::MonthDay { month, day, year };
    }
    // `3:28 pm` has its meridiem as a word of its own.
    let (time, used) = match (words.get(at), words.get(at + 1)) {
        (Some(t), Some(m)) if *m == "am" || *m == "pm" => (parse_time(&format!("{t}{m}"))?, 2),
        (Some(t), _) => (parse_time(t)?, 1),
        _ => return None,
    };
    at += used;
    let place = match words.get(at) {
        None => Place::Offset(zone.offset),
        Some(word) => place_of(word, zone)?,
    };
    let today = place.date_at(now)?;
    let candidate = |d: NaiveDate| place.instant(d.and_time(time));
    let target = match date {
        DateSpec::Full(d) => candidate(d)?,
        DateSpec::MonthDay { month, day, year } => {
            let this_year = candidate(NaiveDate::from_ymd_opt(
                year.unwrap_or(today.year()),
                month,
                day,
            )?)?;
            if year.is_none() && this_year < now {
                candidate(NaiveDate::from_ymd_opt(today.year() + 1, month, day)?)?
            } else {
                this_year
            }
        }
        DateSpec::Weekday(day) => {
            let ahead = (7 + day.num_days_from_monday() as i64
                - today.weekday().num_days_from_monday() as i64)
                % 7;
            let t = candidate(today + Duration::days(ahead))?;
            if t <= now { t + Duration::days(7) } else { t }
        }
        DateSpec::None => {
            let t = candidate(today)?;
            if t <= now { t + Duration::days(1) } else { t }
        }
    };
    Some(target)
}

/// Where a printed clock time is read: a fixed offset, or a named zone whose offset depends on
/// the date (daylight saving time).
enum Place {
    Offset(FixedOffset),
    Named(Zone),
}

impl Place {
    fn date_at(&self, now: DateTime<Utc>) -> Option<NaiveDate> {
        Some(match self {
            Place::Offset(offset) => now.with_timezone(offset).date_naive(),
            Place::Named(zone) => {
                let date = zone.to_datetime(timestamp(now)?).date();
                NaiveDate::from_ymd_opt(date.year().into(), date.month() as u32, date.day() as u32)?
            }
        })
    }

    /// The instant of a local time here; the earlier one when a clock change repeats it, none
    /// when a clock change skips it.
    fn instant(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Place::Offset(offset) => offset
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.with_timezone(&Utc)),
            Place::Named(zone) => {
                let civil = jiff::civil::DateTime::new(
                    i16::try_from(local.year()).ok()?,
                    i8::try_from(local.month()).ok()?,
                    i8::try_from(local.day()).ok()?,
                    i8::try_from(local.hour()).ok()?,
                    i8::try_from(local.minute()).ok()?,
                    i8::try_from(local.second()).ok()?,
                    0,
                )
                .ok()?;
                let offset = match zone.to_ambiguous_timestamp(civil).offset() {
                    AmbiguousOffset::Unambiguous { offset } => offset,
                    // A repeated hour: its first instant, as for a fixed offset's `earliest`.
                    AmbiguousOffset::Fold { before, .. } => before,
                    AmbiguousOffset::Gap { .. } => return None,
                };
                let utc = local - Duration::seconds(offset.seconds().into());
                Some(utc.and_utc())
            }
        }
    }
}

fn timestamp(at: DateTime<Utc>) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_second(at.timestamp()).ok()
}

enum DateSpec {
    None,
    Weekday(chrono::Weekday),
    Full(NaiveDate),
    MonthDay {
        month: u32,
        day: u32,
        year: Option<i32>,
    },
}

fn weekday(word: &str) -> Option<chrono::Weekday> {
    let three = word.get(..3)?;
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == three && (word.len() == 3 || word.ends_with("day")))
        .and_then(|i| chrono::Weekday::try_from(i as u8).ok())
}

fn month(word: &str) -> Option<u32> {
    let three = word.get(..3)?;
    [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| *m == three)
    .map(|i| i as u32 + 1)
}

/// `5pm`, `3:45pm`, `12:00am`, `00:00`: a time needs a meridiem or a colon.
fn parse_time(word: &str) -> Option<NaiveTime> {
    let (clock, meridiem) = if let Some(c) = word.strip_suffix("am") {
        (c, Some(false))
    } else if let Some(c) = word.strip_suffix("pm") {
        (c, Some(true))
    } else {
        (word, None)
    };
    let (hour, minute) = match clock.split_once(':') {
        Some((h, m)) => (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?),
        None if meridiem.is_some() => (clock.parse::<u32>().ok()?, 0),
        None => return None,
    };
    let hour = match meridiem {
        Some(pm) if (1..=12).contains(&hour) => hour % 12 + if pm { 12 } else { 0 },
        Some(_) => return None,
        None => hour,
    };
    NaiveTime::from_hms_opt(hour, minute, 0)
}

/// `(utc)`, `utc`, `gmt`, `+02:00`, or an IANA zone name (`(europe/paris)`: the text is
/// lowercased, so the name is matched without case); None for a zone name we do not know.
fn place_of(word: &str, zone: &LocalZone) -> Option<Place> {
    let name = word.trim_start_matches('(').trim_end_matches(')');
    if matches!(name, "utc" | "gmt" | "etc/utc" | "z") {
        return FixedOffset::east_opt(0).map(Place::Offset);
    }
    if let Some(sign) = name.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits: String = name[1..].chars().filter(char::is_ascii_digit).collect();
        let (h, m) = match digits.len() {
            1 | 2 => (digits.parse::<i32>().ok()?, 0),
            4 => (
                digits[..2].parse::<i32>().ok()?,
                digits[2..].parse::<i32>().ok()?,
            ),
            _ => return None,
        };
        let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
        return FixedOffset::east_opt(secs).map(Place::Offset);
    }
    if let Ok(zone) = Zone::get(name) {
        return Some(Place::Named(zone));
    }
    if zone
        .name
        .as_deref()
        .is_some_and(|own| own.eq_ignore_ascii_case(name))
    {
        return Some(Place::Offset(zone.offset));
    }
    if name.contains('/') || word.starts_with('(') {
        return None;
    }
    // Words after the time that are no zone (`/upgrade ...` is on its own line; this is prose).
    Some(Place::Offset(zone.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        // A Thursday.
        "2025-11-06T00:13:55Z".parse().unwrap()
    }

    fn at(text: &str) -> Option<String> {
        reset_time(text, now(), &LocalZone::utc()).map(crate::clock::format)
    }

    #[test]
    fn claude_code_clock_times() {
        // The official error reference (code.claude.com/docs/en/errors, "Usage limits").
        assert_eq!(
            at("You've hit your session limit · resets 3:45pm").as_deref(),
            Some("2025-11-06T15:45:00Z")
        );
        assert_eq!(
            at("You've hit your weekly limit · resets Mon 12:00am").as_deref(),
            Some("2025-11-10T00:00:00Z")
        );
        // The wording, with the zone as shown in the field (anthropics/claude-code #79136).
        assert_eq!(
            at("You've hit your session limit · resets 5pm (UTC)").as_deref(),
            Some("2025-11-06T17:00:00Z")
        );
        // anthropics/claude-code #2490: "Your limit will reset at 3pm (America/Bogota)": another
        // zone than the machine's, read in that zone (UTC-5; 3pm there has passed, so tomorrow).
        assert_eq!(
            at("Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).")
                .as_deref(),
            Some("2025-11-06T20:00:00Z")
        );
        // A zone name nobody knows leaves the reset unknown.
        assert_eq!(
            at("Your limit will reset at 3pm (Mars/Olympus_Mons)."),
            None
        );
        // Daylight saving time on the reset's date: Paris is UTC+2 in July, whatever the
        // machine's zone.
        let july: DateTime<Utc> = "2026-07-01T08:00:00Z".parse().unwrap();
        let t = reset_time(
            "You've hit your session limit · resets 5pm (Europe/Paris)",
            july,
            &LocalZone::utc(),
        );
        assert_eq!(
            t.map(crate::clock::format).as_deref(),
            Some("2026-07-01T15:00:00Z")
        );
        // #21562 with a date; the machine's zone is resolved by name.
        let paris = LocalZone {
            offset: FixedOffset::east_opt(3600).unwrap(),
            name: Some("Europe/Paris".into()),
        };
        let t = reset_time(
            "You've hit your limit · resets Jan 30, 11:30am (Europe/Paris)",
            now(),
            &paris,
        );
        assert_eq!(
            t.map(crate::clock::format).as_deref(),
            Some("2026-01-30T10:30:00Z")
        );
        let t = reset_time(
            "You've hit your session limit · resets 5pm (Europe/Paris)\n/login to switch to an API usage-billed account.",
            now(),
            &paris,
        );
        assert_eq!(
            t.map(crate::clock::format).as_deref(),
            Some("2025-11-06T16:00:00Z")
        );
        // #7641: "5-hour limit reached ∙ resets 12pm"; past times roll to the next day.
        assert_eq!(
            at("5-hour limit reached ∙ resets 12am").as_deref(),
            Some("2025-11-07T00:00:00Z")
        );
        // [CC-ERRORS]: a gateway's "spend limit reached (daily; resets 2026-08-09 00:00 UTC)".
        assert_eq!(
            at("spend limit reached (daily; resets 2026-08-09 00:00 UTC)").as_deref(),
            Some("2026-08-09T00:00:00Z")
        );
        // #2490: the pipe and epoch of the auto-filed titles.
        assert_eq!(
            at("Claude AI usage limit reached|1750708800").as_deref(),
            Some("2025-06-23T20:00:00Z")
        );
    }

    #[test]
    fn codex_and_gemini_times_and_waits() {
        // codex-rs/protocol/src/error.rs (UsageLimitReachedError): `%-I:%M %p` local time.
        assert_eq!(
            at("You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 3:28 PM.").as_deref(),
            Some("2025-11-06T15:28:00Z")
        );
        assert_eq!(
            at("You've hit your usage limit. Try again at Aug 8th, 2026 12:30 PM.").as_deref(),
            Some("2026-08-08T12:30:00Z")
        );
        // The 2025 duration form of the same message.
        assert_eq!(
            at("You've hit your usage limit. To get more access now, send a request to your admin or try again in 3 days 6 hours 57 minutes.").as_deref(),
            Some("2025-11-09T07:10:55Z")
        );
        assert_eq!(
            at("try again in 1h 23m").as_deref(),
            Some("2025-11-06T01:36:55Z")
        );
        // gemini-cli googleQuotaErrors test fixtures.
        assert_eq!(at("You have exhausted your capacity on this model. Your quota will reset after 19h14m47s.").as_deref(), Some("2025-11-06T19:28:42Z"));
        assert_eq!(
            at("Resource exhausted. Please retry in 5s").as_deref(),
            Some("2025-11-06T00:14:00Z")
        );
        // RFC 9110 §10.2.3: Retry-After in seconds.
        assert_eq!(
            at("HTTP 429\nretry-after: 30").as_deref(),
            Some("2025-11-06T00:14:25Z")
        );
        assert_eq!(at("You've hit your usage limit. Try again later."), None);
        assert_eq!(at("API Error: Rate limit reached"), None);
    }

    #[test]
    fn only_the_last_lines_are_the_final_output() {
        let tail = format!(
            "{}\nerror: crashed\n",
            "rate limit\n".repeat(3) + &"code\n".repeat(FINAL_LINES)
        );
        assert!(!final_output(&tail).contains("rate limit"));
        assert!(final_output("a\n\n\nb\n").contains('a'));
    }
}
