//! Signal names as users type them.

/// The signals a job may be sent. All but KILL go to its reaper, which forwards them to the
/// program; KILL ends the reaper and with it the whole PID namespace.
pub const ALLOWED: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
];

/// `TERM`, `SIGTERM`, `term` or `15` to 15; `None` for a signal not in [`ALLOWED`].
pub fn parse(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    ALLOWED
        .iter()
        .find(|(n, num)| *n == bare || bare.parse::<i32>().ok() == Some(*num))
        .map(|(_, num)| *num)
}

/// The name of an allowed signal.
pub fn name(signal: i32) -> Option<&'static str> {
    ALLOWED.iter().find(|(_, n)| *n == signal).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("sigint"), Some(2));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("USR2"), Some(12));
        assert_eq!(parse("STOP"), None);
        assert_eq!(parse("19"), None);
        assert_eq!(parse(""), None);
        assert_eq!(name(1), Some("HUP"));
    }
}
