//! Access windows on the real calendar: "Mon-Fri 08:00-18:00 Europe/Berlin" as instants, across
//! daylight-saving changes (the bundled IANA database, through jiff).

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::config::access::{Access, Window};

/// A forward's windows in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    windows: Vec<Window>,
    tz: TimeZone,
}

/// Windows are looked for this many days around now: a window recurs weekly, so a week and a
/// day always contains the next start.
const LOOK_BEHIND: i64 = 1;
const LOOK_AHEAD: i64 = 8;

impl Schedule {
    pub fn new(access: &Access) -> Self {
        Self {
            windows: access.windows.clone(),
            // Checked when agent.yaml was read; UTC only if the database lost it since.
            tz: TimeZone::get(&access.timezone).unwrap_or(TimeZone::UTC),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether `now` is inside a window, and the next instant that changes (the end of the
    /// window we are in, or the start of the next one). `None`: no window ever opens.
    pub fn at(&self, now: Timestamp) -> (bool, Option<Timestamp>) {
        let intervals = self.intervals(now);
        if let Some((_, end)) = intervals.iter().find(|(s, e)| *s <= now && now < *e) {
            return (true, Some(*end));
        }
        let next = intervals.iter().map(|(s, _)| *s).find(|s| *s > now);
        (false, next)
    }

    /// Every window occurrence from a day before `now` to eight days after, as instants, sorted
    /// and merged where they touch or overlap (so "open until" is the real end).
    fn intervals(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        let mut all = Vec::new();
        for offset in -LOOK_BEHIND..=LOOK_AHEAD {
            let Ok(day) = today.checked_add(offset.days()) else {
                continue;
            };
            let weekday = day.weekday().to_monday_zero_offset() as usize;
            for w in self.windows.iter().filter(|w| w.days[weekday]) {
                let end_day = if w.overnight() || w.end == 1440 {
                    day.tomorrow().ok()
                } else {
                    Some(day)
                };
                let (Some(start), Some(end)) = (
                    self.instant(day, w.start),
                    end_day.and_then(|d| self.instant(d, w.end % 1440)),
                ) else {
                    continue;
                };
                // A window inside a skipped hour (spring forward) is empty: skip it.
                if start < end {
                    all.push((start, end));
                }
            }
        }
        all.sort();
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// `minutes` after local midnight of `day`. A local time that does not exist (skipped by a
    /// spring-forward change) maps to the first instant after the gap; one that exists twice
    /// (fall back) to the earlier: "compatible", as RFC 5545 calendars do.
    fn instant(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let time = jiff::civil::time((minutes / 60) as i8, (minutes % 60) as i8, 0, 0);
        let local = DateTime::from_parts(day, time);
        self.tz.to_ambiguous_timestamp(local).compatible().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(windows: &[&str], tz: &str) -> Schedule {
        Schedule::new(&Access {
            windows: windows.iter().map(|w| Window::parse(w).unwrap()).collect(),
            timezone: tz.into(),
            grant_max: None,
        })
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekdays_in_berlin_open_and_close_at_local_time() {
        let s = schedule(&["Mon-Fri 08:00-18:00"], "Europe/Berlin");
        // Wednesday 2026-11-25, CET (UTC+1): 08:00 local is 07:00Z.
        assert_eq!(
            s.at(ts("2026-11-25T06:59:59Z")),
            (false, Some(ts("2026-11-25T07:00:00Z")))
        );
        assert_eq!(
            s.at(ts("2026-11-25T07:00:00Z")),
            (true, Some(ts("2026-11-25T17:00:00Z")))
        );
        assert_eq!(
            s.at(ts("2026-11-25T17:00:00Z")),
            (false, Some(ts("2026-11-26T07:00:00Z")))
        );
        // Friday evening: next open is Monday.
        assert_eq!(
            s.at(ts("2026-11-27T18:00:00Z")),
            (false, Some(ts("2026-11-30T07:00:00Z")))
        );
    }

    #[test]
    fn daylight_saving_changes_move_the_instants_not_the_local_times() {
        let s = schedule(&["daily 08:00-18:00"], "Europe/Berlin");
        // Sunday 2026-03-29 clocks go 02:00 -> 03:00 (CET -> CEST). Saturday: 07:00Z.
        assert_eq!(
            s.at(ts("2026-03-28T12:00:00Z")),
            (true, Some(ts("2026-03-28T17:00:00Z")))
        );
        // Sunday opens at 08:00 CEST = 06:00Z, closes 18:00 CEST = 16:00Z.
        assert_eq!(
            s.at(ts("2026-03-28T20:00:00Z")),
            (false, Some(ts("2026-03-29T06:00:00Z")))
        );
        assert_eq!(
            s.at(ts("2026-03-29T06:00:00Z")),
            (true, Some(ts("2026-03-29T16:00:00Z")))
        );
        // Autumn: 2026-10-25 03:00 CEST -> 02:00 CET. Opens 08:00 CET = 07:00Z.
        assert_eq!(
            s.at(ts("2026-10-25T06:30:00Z")),
            (false, Some(ts("2026-10-25T07:00:00Z")))
        );
    }

    #[test]
    fn a_window_in_the_skipped_hour_and_one_across_the_change() {
        // 02:00-03:00 does not exist on 2026-03-29 in Berlin: no window that night.
        let s = schedule(&["Sun 02:00-03:00"], "Europe/Berlin");
        let (open, next) = s.at(ts("2026-03-29T00:30:00Z"));
        assert!(!open);
        assert_eq!(
            next,
            Some(ts("2026-04-05T00:00:00Z")),
            "the next Sunday, CEST"
        );
        // Overnight across the change: Sat 22:00 CET (21:00Z) to Sun 06:00 CEST (04:00Z): 7 h.
        let s = schedule(&["Sat 22:00-06:00"], "Europe/Berlin");
        assert_eq!(
            s.at(ts("2026-03-28T21:00:00Z")),
            (true, Some(ts("2026-03-29T04:00:00Z")))
        );
    }

    #[test]
    fn touching_windows_merge_and_no_windows_never_open() {
        let s = schedule(&["Mon 00:00-24:00", "Tue 00:00-12:00"], "UTC");
        // Monday 2026-11-23 all day and Tuesday morning: one stretch.
        assert_eq!(
            s.at(ts("2026-11-23T10:00:00Z")),
            (true, Some(ts("2026-11-24T12:00:00Z")))
        );
        assert_eq!(
            schedule(&[], "UTC").at(ts("2026-11-23T10:00:00Z")),
            (false, None)
        );
    }
}
