//! The node's own keyboard, as Clump/OS had it: Esc and a confirmation power the node off in
//! order; F2 (or Tab) shows the root shell on tty2, and Alt-F1 there comes back.
//!
//! Pure: bytes from the terminal in, keys and actions out, so every path is unit-tested.

use std::time::Duration;

/// How long the power-off question stays open.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Esc,
    Enter,
    Tab,
    Char(char),
    /// F1 to F12.
    F(u8),
    /// Anything else (arrows, Alt-combinations, bytes we do not use).
    Other,
}

/// Splits what one read from the terminal gave into keys. The Linux console writes each key's
/// sequence at once, so an Esc at the end of a read is the Esc key, not the start of a sequence.
pub fn decode(bytes: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (key, used) = match bytes[i] {
            0x1b => escape(&bytes[i + 1..]),
            b'\r' | b'\n' => (Key::Enter, 1),
            b'\t' => (Key::Tab, 1),
            b if b.is_ascii_graphic() || b == b' ' => (Key::Char(char::from(b)), 1),
            _ => (Key::Other, 1),
        };
        keys.push(key);
        i += used;
    }
    keys
}

/// A sequence after ESC: the key and how many bytes it used, ESC included.
fn escape(rest: &[u8]) -> (Key, usize) {
    match rest {
        [] => (Key::Esc, 1),
        // Linux console F1-F5: ESC [ [ A .. E.
        [b'[', b'[', c @ b'A'..=b'E', ..] => (Key::F(c - b'A' + 1), 4),
        [b'[', tail @ ..] => {
            // ESC [ digits ~ (F-keys of xterm and the Linux console from F6), or ESC [ letter.
            let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
            match tail.get(digits) {
                Some(b'~') => {
                    let n: u32 = std::str::from_utf8(&tail[..digits])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    (function_key(n), digits + 3)
                }
                Some(_) => (Key::Other, digits + 3),
                None => (Key::Other, digits + 2),
            }
        }
        [b'O', b'P'..=b'S', ..] => (Key::F(rest[1] - b'P' + 1), 3),
        [0x1b, ..] => (Key::Esc, 1),
        _ => (Key::Other, 2),
    }
}

fn function_key(n: u32) -> Key {
    match n {
        11..=15 => Key::F((n - 10) as u8),
        17..=21 => Key::F((n - 11) as u8),
        23 | 24 => Key::F((n - 12) as u8),
        _ => Key::Other,
    }
}

/// What a key asks the screen to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show the question (or take it away with `None`).
    Notice(Option<String>),
    /// Confirmed: power the node off in order.
    PowerOff,
    /// Put the shell's terminal in front.
    ShowShell,
}

/// The keyboard's one piece of state: whether the power-off question is open, since when.
#[derive(Debug, Default)]
pub struct Controls {
    asked_at: Option<Duration>,
}

pub const QUESTION: &str = "Power this node off? Press Y or Enter to confirm, any other key to cancel.";

impl Controls {
    /// `now` is any monotonic clock.
    pub fn key(&mut self, key: Key, now: Duration) -> Option<Action> {
        self.expire(now);
        if self.asked_at.take().is_some() {
            return Some(match key {
                Key::Char('y' | 'Y') | Key::Enter => Action::PowerOff,
                _ => Action::Notice(None),
            });
        }
        match key {
            Key::Esc => {
                self.asked_at = Some(now);
                Some(Action::Notice(Some(QUESTION.to_string())))
            }
            Key::F(2) | Key::Tab => Some(Action::ShowShell),
            _ => None,
        }
    }

    /// Closes an unanswered question after [`CONFIRM_WINDOW`]; true if it just closed.
    pub fn expire(&mut self, now: Duration) -> bool {
        match self.asked_at {
            Some(at) if now.saturating_sub(at) >= CONFIRM_WINDOW => {
                self.asked_at = None;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    fn asking(&self) -> bool {
        self.asked_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sequences_decode_to_keys() {
        assert_eq!(decode(b"\x1b"), [Key::Esc]);
        assert_eq!(decode(b"\x1b[[B"), [Key::F(2)]);
        assert_eq!(decode(b"\x1b[12~"), [Key::F(2)]);
        assert_eq!(decode(b"\x1bOQ"), [Key::F(2)]);
        assert_eq!(decode(b"\x1b[17~"), [Key::F(6)]);
        assert_eq!(decode(b"\x1b[A"), [Key::Other]);
        assert_eq!(decode(b"y\r\t"), [Key::Char('y'), Key::Enter, Key::Tab]);
        assert_eq!(decode(b"\x1b\x1b"), [Key::Esc, Key::Esc]);
        assert_eq!(decode(b"\x1bx"), [Key::Other]);
    }

    #[test]
    fn truncated_or_hostile_bytes_never_panic() {
        for s in [
            &b"\x1b["[..],
            b"\x1b[[",
            b"\x1b[99999999999999999999~",
            b"\x1b[1",
            b"\xff\x00",
        ] {
            let _ = decode(s);
        }
        assert_eq!(decode(b"\x1b[99999999999999999999~"), [Key::Other]);
    }

    #[test]
    fn esc_then_y_powers_off_and_anything_else_cancels() {
        let mut c = Controls::default();
        let t = Duration::from_secs(100);
        assert!(matches!(c.key(Key::Esc, t), Some(Action::Notice(Some(_)))));
        assert_eq!(c.key(Key::Char('y'), t), Some(Action::PowerOff));
        assert!(!c.asking());

        assert!(matches!(c.key(Key::Esc, t), Some(Action::Notice(Some(_)))));
        assert_eq!(c.key(Key::Char('n'), t), Some(Action::Notice(None)));
        assert_eq!(
            c.key(Key::Char('y'), t),
            None,
            "a y without the question does nothing"
        );
    }

    #[test]
    fn the_question_expires() {
        let mut c = Controls::default();
        let t = Duration::from_secs(5);
        c.key(Key::Esc, t);
        assert!(!c.expire(t + Duration::from_secs(1)));
        assert!(c.expire(t + CONFIRM_WINDOW));
        assert_eq!(c.key(Key::Enter, t + CONFIRM_WINDOW), None);
    }

    #[test]
    fn f2_or_tab_shows_the_shell() {
        let mut c = Controls::default();
        assert_eq!(c.key(Key::F(2), Duration::ZERO), Some(Action::ShowShell));
        assert_eq!(c.key(Key::Tab, Duration::ZERO), Some(Action::ShowShell));
    }
}
