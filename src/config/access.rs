//! `forwards[].access`: when the vendor may reach a forward. Absent, always (today's configs keep
//! working). The file is the ceiling: a grant can open a forward only if its `access.grant` allows
//! grants, and for no longer than its `max`; nothing from the vendor's side can widen it.
//!
//! Parsed and checked here; `crate::access` decides, from these and the clock, what is open.

use std::fmt;
use std::time::Duration;

/// A forward's access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Recurring windows in `timezone` during which the forward is open. Empty: open only under
    /// a grant.
    pub windows: Vec<Window>,
    /// An IANA time-zone name ("Europe/Berlin"), checked against the bundled database; "UTC"
    /// when not given.
    pub timezone: String,
    /// `grant.max`: grants are allowed, for at most this long each. `None`: no grants.
    pub grant_max: Option<Duration>,
}

impl Access {
    /// Closed unless someone grants it.
    pub fn grant_only(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Days of the week, Monday first, as in ISO 8601.
pub const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `"Mon-Fri 08:00-18:00"`: on the given days, from `start` to `end` local time. An `end` at or
/// before `start` ends on the next day (`"Fri 22:00-06:00"` is Friday night into Saturday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `days[0]` is Monday.
    pub days: [bool; 7],
    /// Minutes after local midnight, 0..1440.
    pub start: u16,
    /// Minutes after local midnight, 1..=1440 (24:00 is the end of the day).
    pub end: u16,
}

impl Window {
    /// Parses `DAYS HH:MM-HH:MM`, where DAYS is `daily`, a day (`Mon`), a range (`Mon-Fri`,
    /// `Fri-Mon`) or a comma list of those (`Mon,Wed,Fri-Sat`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err("is not DAYS HH:MM-HH:MM (e.g. \"Mon-Fri 08:00-18:00\")".into());
        };
        let days = parse_days(days)?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| "has no time range HH:MM-HH:MM".to_string())?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        if start == 1440 {
            return Err("a window cannot start at 24:00; write 00:00 of the next day".into());
        }
        if start == end {
            return Err(
                "is empty (it ends when it starts); for a whole day write 00:00-24:00".into(),
            );
        }
        Ok(Self { days, start, end })
    }

    /// Whether the window ends on the day after it starts.
    pub fn overnight(&self) -> bool {
        self.end <= self.start
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let day = |d: &str| {
        DAYS.iter()
            .position(|n| n.eq_ignore_ascii_case(d))
            .ok_or_else(|| {
                "names a day that is not one; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or daily"
                    .to_string()
            })
    };
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut i = a;
                loop {
                    days[i] = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => days[day(item)?] = true,
        }
    }
    Ok(days)
}

/// `HH:MM` as minutes after midnight; `24:00` allowed (the end of the day).
fn minutes(text: &str) -> Result<u16, String> {
    let bad = || "has a time that is not HH:MM (00:00 to 24:00)".to_string();
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7).filter(|&i| self.days[i]).map(|i| DAYS[i]).collect();
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{} {}-{}", names.join(","), hm(self.start), hm(self.end))
    }
}

/// Checks an IANA time-zone name against the database bundled into the binary (the same on
/// every host, also in a container without /usr/share/zoneinfo).
pub fn check_timezone(name: &str) -> Result<(), String> {
    jiff::tz::TimeZone::get(name)
        .map(|_| ())
        .map_err(|_| "is not a time zone in the IANA database".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_days_ranges_lists_and_overnight() {
        let w = Window::parse("Mon-Fri 08:00-18:00").unwrap();
        assert_eq!(w.days, [true, true, true, true, true, false, false]);
        assert_eq!((w.start, w.end), (480, 1080));
        assert!(!w.overnight());
        let w = Window::parse("fri-mon 22:00-06:30").unwrap();
        assert_eq!(w.days, [true, false, false, false, true, true, true]);
        assert!(w.overnight());
        assert_eq!(w.to_string(), "Mon,Fri,Sat,Sun 22:00-06:30");
        let w = Window::parse("Mon,Wed 00:00-24:00").unwrap();
        assert_eq!((w.start, w.end), (0, 1440));
        assert_eq!(Window::parse("daily 9:00-17:00").unwrap().days, [true; 7]);
        for bad in [
            "",
            "Mon-Fri",
            "Mon-Fri 08:00",
            "Mon-Fri 08:00-18:00 extra",
            "Mo 08:00-18:00",
            "Mon 8-18",
            "Mon 08:00-08:00",
            "Mon 24:00-01:00",
            "Mon 08:60-09:00",
            "Mon 25:00-26:00",
            "Mon 24:30-01:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_zones_come_from_the_bundled_database() {
        assert!(check_timezone("Europe/Berlin").is_ok());
        assert!(check_timezone("UTC").is_ok());
        assert!(check_timezone("Mars/Olympus").is_err());
    }
}
