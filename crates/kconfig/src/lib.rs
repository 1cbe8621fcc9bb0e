//! Kernel configuration checks for Clump.
//!
//! Parses Kconfig `.config` files and option fragments (the same syntax: `CONFIG_X=y`, `CONFIG_X=m`,
//! `CONFIG_X="text"`, `CONFIG_X=123`, `# CONFIG_X is not set`, other `#` lines are comments) and checks
//! a kernel's configuration against a fragment of requirements such as `kernel-config/clump.config`.
//!
//! A requirement `=y` is met only by `y`; `=m` is met by `m` or `y` (built in is as good as a module);
//! `is not set` / `=n` is met by an absent, `n` or not-set option; strings and numbers must be equal.

use std::collections::HashMap;
use std::fmt;

/// The value of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `=y`: built in.
    Yes,
    /// `=m`: built as a module.
    Module,
    /// `=n` or `# CONFIG_X is not set`.
    No,
    /// `="..."`, unescaped.
    Str(String),
    /// A decimal or `0x` hexadecimal number, as written.
    Num(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::No => f.write_str("n"),
            Value::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            Value::Num(n) => f.write_str(n),
        }
    }
}

/// One option as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full option name, including the `CONFIG_` prefix.
    pub name: String,
    pub value: Value,
    /// 1-based line number in the file it came from.
    pub line: usize,
    /// The comment block directly above the option (without `#`), if any: in a fragment, the reason
    /// the option is needed.
    pub note: Option<String>,
}

/// What is wrong with a line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("expected `CONFIG_NAME=value`, `# CONFIG_NAME is not set` or a `#` comment")]
    Syntax,
    #[error("invalid option name {0:?} (must be `CONFIG_` followed by letters, digits or `_`)")]
    BadName(String),
    #[error("missing value after `=`")]
    EmptyValue,
    #[error("unterminated string value")]
    UnterminatedString,
    #[error("unexpected text after the closing quote")]
    TrailingText,
    #[error("invalid value {0:?} (expected y, m, n, a quoted string or a number)")]
    BadValue(String),
}

/// A line of a `.config` or fragment that is not valid Kconfig syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub kind: ParseErrorKind,
    /// The offending line.
    pub text: String,
}

/// A parsed `.config` or fragment. When an option appears twice the later line wins (as in Kconfig).
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Config {
    /// Parses the text of a `.config` file or a fragment.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut config = Config::default();
        let mut note: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            let err = |kind| ParseError {
                line: line_no,
                kind,
                text: raw.to_string(),
            };
            if line.is_empty() {
                note.clear();
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim();
                match parse_not_set(comment) {
                    Some(name) => {
                        check_name(name).map_err(err)?;
                        config.push(name, Value::No, line_no, take_note(&mut note));
                    }
                    None => note.push(comment.to_string()),
                }
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(err(ParseErrorKind::Syntax));
            };
            let name = name.trim_end();
            check_name(name).map_err(err)?;
            let value = parse_value(value.trim_start()).map_err(err)?;
            config.push(name, value, line_no, take_note(&mut note));
        }
        Ok(config)
    }

    fn push(&mut self, name: &str, value: Value, line: usize, note: Option<String>) {
        let entry = Entry {
            name: name.to_string(),
            value,
            line,
            note,
        };
        match self.index.get(name) {
            Some(&i) => self.entries[i] = entry,
            None => {
                self.index.insert(name.to_string(), self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    /// The value of an option; `name` may be given with or without the `CONFIG_` prefix.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let key = if name.starts_with("CONFIG_") {
            name.to_string()
        } else {
            format!("CONFIG_{name}")
        };
        self.index.get(&key).map(|&i| &self.entries[i].value)
    }

    /// All options, in the order of their first appearance.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn take_note(note: &mut Vec<String>) -> Option<String> {
    let text = note.join(" ").trim().to_string();
    note.clear();
    (!text.is_empty()).then_some(text)
}

/// `CONFIG_X is not set` (the text after `#`) gives `Some("CONFIG_X")`; other comments give `None`.
fn parse_not_set(comment: &str) -> Option<&str> {
    let name = comment.strip_suffix("is not set")?.trim_end();
    (name.starts_with("CONFIG_") && !name.contains(char::is_whitespace)).then_some(name)
}

fn check_name(name: &str) -> Result<(), ParseErrorKind> {
    let valid = name
        .strip_prefix("CONFIG_")
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if valid {
        Ok(())
    } else {
        Err(ParseErrorKind::BadName(name.to_string()))
    }
}

fn parse_value(text: &str) -> Result<Value, ParseErrorKind> {
    let text = text.trim_end();
    if text.is_empty() {
        return Err(ParseErrorKind::EmptyValue);
    }
    if let Some(rest) = text.strip_prefix('"') {
        return parse_string(rest);
    }
    match text {
        "y" => Ok(Value::Yes),
        "m" => Ok(Value::Module),
        "n" => Ok(Value::No),
        _ if is_number(text) => Ok(Value::Num(text.to_string())),
        _ => Err(ParseErrorKind::BadValue(text.to_string())),
    }
}

/// Parses the rest of a quoted string (after the opening quote).
fn parse_string(rest: &str) -> Result<Value, ParseErrorKind> {
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => return Err(ParseErrorKind::UnterminatedString),
            },
            '"' => {
                return if rest[i + 1..].trim().is_empty() {
                    Ok(Value::Str(out))
                } else {
                    Err(ParseErrorKind::TrailingText)
                };
            }
            _ => out.push(c),
        }
    }
    Err(ParseErrorKind::UnterminatedString)
}

fn is_number(text: &str) -> bool {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn number_value(text: &str) -> Option<i128> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Whether the value `found` (`None`: the option is absent) meets the requirement `wanted`.
pub fn satisfies(found: Option<&Value>, wanted: &Value) -> bool {
    match (wanted, found) {
        (Value::Yes, Some(Value::Yes)) => true,
        (Value::Module, Some(Value::Yes | Value::Module)) => true,
        (Value::No, None | Some(Value::No)) => true,
        (Value::Str(w), Some(Value::Str(f))) => w == f,
        (Value::Num(w), Some(Value::Num(f))) => match (number_value(w), number_value(f)) {
            (Some(w), Some(f)) => w == f,
            _ => w.eq_ignore_ascii_case(f),
        },
        _ => false,
    }
}

/// A requirement of the fragment that the configuration does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The requirement, as written in the fragment.
    pub required: Entry,
    /// What the configuration has (`None`: the option does not appear at all).
    pub found: Option<Value>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.required;
        match r.value {
            Value::No => write!(f, "{} must not be set", r.name)?,
            _ => write!(f, "{}={}", r.name, r.value)?,
        }
        match &self.found {
            None => f.write_str(" (absent)")?,
            Some(Value::No) => f.write_str(" (is not set)")?,
            Some(v) => write!(f, " (has {v})")?,
        }
        if let Some(note) = &r.note {
            write!(f, ": {note}")?;
        }
        Ok(())
    }
}

/// Every requirement of `required` that `config` does not meet, in the fragment's order.
pub fn check(config: &Config, required: &Config) -> Vec<Missing> {
    required
        .entries()
        .filter(|req| !satisfies(config.get(&req.name), &req.value))
        .map(|req| Missing {
            required: req.clone(),
            found: config.get(&req.name).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("valid config")
    }

    fn parse_err(text: &str) -> ParseError {
        Config::parse(text).expect_err("invalid config")
    }

    #[test]
    fn parses_all_value_kinds() {
        let c = parse(
            "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_A=y\nCONFIG_B=m\n\
             # CONFIG_C is not set\nCONFIG_D=\"hello \\\"world\\\" \\\\\"\nCONFIG_E=0x1000\n\
             CONFIG_F=-42\nCONFIG_G=n\nCONFIG_EMPTY=\"\"\n",
        );
        assert_eq!(c.get("CONFIG_A"), Some(&Value::Yes));
        assert_eq!(c.get("B"), Some(&Value::Module));
        assert_eq!(c.get("C"), Some(&Value::No));
        assert_eq!(c.get("D"), Some(&Value::Str("hello \"world\" \\".into())));
        assert_eq!(c.get("E"), Some(&Value::Num("0x1000".into())));
        assert_eq!(c.get("F"), Some(&Value::Num("-42".into())));
        assert_eq!(c.get("G"), Some(&Value::No));
        assert_eq!(c.get("EMPTY"), Some(&Value::Str(String::new())));
        assert_eq!(c.get("NOPE"), None);
        assert_eq!(c.len(), 8);
    }

    #[test]
    fn value_display_round_trips() {
        for text in ["CONFIG_S=\"a \\\"q\\\" \\\\ b\"", "CONFIG_N=0x10", "CONFIG_Y=y"] {
            let c = parse(text);
            let e = c.entries().next().expect("one entry");
            assert_eq!(format!("{}={}", e.name, e.value), text);
        }
    }

    #[test]
    fn later_line_wins() {
        let c = parse("CONFIG_A=m\nCONFIG_A=y\n");
        assert_eq!(c.get("A"), Some(&Value::Yes));
        assert_eq!(c.len(), 1);
        assert_eq!(c.entries().next().map(|e| e.line), Some(2));
    }

    #[test]
    fn comment_above_becomes_note() {
        let c = parse("# first part\n# second part\nCONFIG_A=y\n\n# unrelated\n\nCONFIG_B=y\n");
        let notes: Vec<_> = c.entries().map(|e| e.note.clone()).collect();
        assert_eq!(notes, vec![Some("first part second part".to_string()), None]);
    }

    #[test]
    fn ordinary_comments_are_not_options() {
        let c = parse("# CONFIG_A is enabled elsewhere\n#CONFIG_B=y\n# General setup\n");
        assert!(c.is_empty());
    }

    #[test]
    fn whitespace_is_tolerated() {
        let c = parse("  CONFIG_A = y  \r\n\t# CONFIG_B is not set\n");
        assert_eq!(c.get("A"), Some(&Value::Yes));
        assert_eq!(c.get("B"), Some(&Value::No));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let e = parse_err("CONFIG_A=y\nthis is junk\n");
        assert_eq!(e.line, 2);
        assert_eq!(e.kind, ParseErrorKind::Syntax);
        assert!(e.to_string().starts_with("line 2: expected"), "{e}");

        assert_eq!(parse_err("CONFIG_A=\n").kind, ParseErrorKind::EmptyValue);
        assert_eq!(parse_err("FOO=y\n").kind, ParseErrorKind::BadName("FOO".into()));
        assert_eq!(
            parse_err("CONFIG_=y\n").kind,
            ParseErrorKind::BadName("CONFIG_".into())
        );
        assert_eq!(
            parse_err("CONFIG_A-B=y\n").kind,
            ParseErrorKind::BadName("CONFIG_A-B".into())
        );
        assert_eq!(
            parse_err("CONFIG_A=yes\n").kind,
            ParseErrorKind::BadValue("yes".into())
        );
        assert_eq!(
            parse_err("CONFIG_A=0xZZ\n").kind,
            ParseErrorKind::BadValue("0xZZ".into())
        );
        assert_eq!(
            parse_err("CONFIG_A=\"abc\n").kind,
            ParseErrorKind::UnterminatedString
        );
        assert_eq!(
            parse_err("CONFIG_A=\"abc\\\"\n").kind,
            ParseErrorKind::UnterminatedString
        );
        assert_eq!(
            parse_err("CONFIG_A=\"abc\" x\n").kind,
            ParseErrorKind::TrailingText
        );
        assert_eq!(
            parse_err("CONFIG_A=y # why\n").kind,
            ParseErrorKind::BadValue("y # why".into())
        );
    }

    #[test]
    fn not_set_with_spaces_in_name_is_a_comment() {
        assert!(parse(
            "# CONFIG_A B is not set
"
        )
        .is_empty());
    }

    #[test]
    fn bad_name_in_not_set_line_is_an_error() {
        let e = parse_err("# CONFIG_A-B is not set\n");
        assert_eq!(e.kind, ParseErrorKind::BadName("CONFIG_A-B".into()));
        assert_eq!(e.line, 1);
    }

    #[test]
    fn requirement_semantics() {
        use Value::*;
        assert!(satisfies(Some(&Yes), &Yes));
        assert!(!satisfies(Some(&Module), &Yes));
        assert!(!satisfies(None, &Yes));
        assert!(satisfies(Some(&Module), &Module));
        assert!(satisfies(Some(&Yes), &Module));
        assert!(!satisfies(Some(&No), &Module));
        assert!(!satisfies(None, &Module));
        assert!(satisfies(None, &No));
        assert!(satisfies(Some(&No), &No));
        assert!(!satisfies(Some(&Module), &No));
        assert!(satisfies(Some(&Str("a".into())), &Str("a".into())));
        assert!(!satisfies(Some(&Str("a".into())), &Str("b".into())));
        assert!(satisfies(Some(&Num("0x10".into())), &Num("16".into())));
        assert!(!satisfies(Some(&Num("15".into())), &Num("16".into())));
        assert!(!satisfies(Some(&Yes), &Str("y".into())));
    }

    #[test]
    fn check_names_what_is_missing() {
        let config = parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_E=m\n");
        let required = parse(
            "CONFIG_A=y\n# B may be a module\nCONFIG_B=m\n# C is needed built in\nCONFIG_C=y\nCONFIG_D=m\n\
             # CONFIG_E is not set\n",
        );
        let missing = check(&config, &required);
        let names: Vec<_> = missing.iter().map(|m| m.required.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_C", "CONFIG_D", "CONFIG_E"]);
        assert_eq!(
            missing[0].to_string(),
            "CONFIG_C=y (is not set): C is needed built in"
        );
        assert_eq!(missing[1].to_string(), "CONFIG_D=m (absent)");
        assert_eq!(missing[2].to_string(), "CONFIG_E must not be set (has m)");
    }

    #[test]
    fn module_does_not_meet_builtin_requirement() {
        let missing = check(&parse("CONFIG_DEVTMPFS=m\n"), &parse("CONFIG_DEVTMPFS=y\n"));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].found, Some(Value::Module));
    }

    #[test]
    fn empty_requirements_are_always_met() {
        assert!(check(&parse("CONFIG_A=y\n"), &parse("# nothing\n")).is_empty());
    }
}
