//! The after-hours window of a pooled workstation: `20:00-07:00` takes guests from 20:00 to
//! 07:00 (across midnight), none outside, and sends its guests away before the window ends so
//! the machine is free when its owner comes back. Times are the node's clock (UTC on a node
//! booted from the image, which has no time zone).

use std::fmt;

/// Guests start leaving this long before the window ends (minutes).
pub const DEFAULT_LEAD_MIN: u32 = 10;

const DAY: u32 = 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight.
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Takes guests.
    Open,
    /// Ends within the lead time: takes none and sends those it has away.
    Closing,
    /// Outside the window: takes none, keeps none.
    Closed,
}

fn hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Window {
    /// `HH:MM-HH:MM`; the error says the form.
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("{text:?} is not a window: HH:MM-HH:MM please, e.g. 20:00-07:00");
        let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
        let (start, end) = (hhmm(a).ok_or_else(bad)?, hhmm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{text:?} is an empty window: start and end must differ"));
        }
        Ok(Window { start, end })
    }

    fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Where the window stands at `minute` after midnight, with guests leaving `lead` minutes
    /// before its end.
    pub fn state(&self, minute: u32, lead: u32) -> WindowState {
        let minute = minute % DAY;
        if !self.contains(minute) {
            return WindowState::Closed;
        }
        let left = (self.end + DAY - minute) % DAY;
        let length = (self.end + DAY - self.start) % DAY;
        if left <= lead.min(length / 2) {
            WindowState::Closing
        } else {
            WindowState::Open
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> u32 {
        h * 60 + m
    }

    #[test]
    fn parses_the_form_and_refuses_others() {
        let w = Window::parse("20:00-07:00").unwrap();
        assert_eq!((w.start, w.end), (at(20, 0), at(7, 0)));
        assert_eq!(w.to_string(), "20:00-07:00");
        assert_eq!(Window::parse(" 9:30-17:05 ").unwrap().to_string(), "09:30-17:05");
        for bad in [
            "",
            "20:00",
            "24:00-07:00",
            "20:60-07:00",
            "20-07",
            "a:00-07:00",
            "08:00-08:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_across_midnight_opens_closes_and_warns_before_its_end() {
        let w = Window::parse("20:00-07:00").unwrap();
        assert_eq!(w.state(at(19, 59), 10), WindowState::Closed);
        assert_eq!(w.state(at(20, 0), 10), WindowState::Open);
        assert_eq!(w.state(at(2, 0), 10), WindowState::Open);
        assert_eq!(w.state(at(6, 50), 10), WindowState::Closing);
        assert_eq!(w.state(at(7, 0), 10), WindowState::Closed);
        assert_eq!(w.state(at(12, 0), 10), WindowState::Closed);
    }

    #[test]
    fn a_day_window_and_a_short_one() {
        let w = Window::parse("09:00-17:00").unwrap();
        assert_eq!(w.state(at(8, 0), 10), WindowState::Closed);
        assert_eq!(w.state(at(12, 0), 10), WindowState::Open);
        assert_eq!(w.state(at(16, 55), 10), WindowState::Closing);
        // A window shorter than twice the lead is open for its first half.
        let short = Window::parse("12:00-12:10").unwrap();
        assert_eq!(short.state(at(12, 1), 10), WindowState::Open);
        assert_eq!(short.state(at(12, 6), 10), WindowState::Closing);
    }
}
