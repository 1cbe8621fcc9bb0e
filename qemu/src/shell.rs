//! Driving the root shell on ttyS0 with markers.
//!
//! A command is typed as one line: print a start marker, `eval` the command (so `cmd &` or `a; b`
//! work), print an end marker with `$?`. One line, because a line typed while the previous one runs
//! is echoed into the previous one's output. Markers are printed from split `printf` arguments, so
//! the terminal's echo of the typed text never contains one; only lines that *are* a marker count.

/// The text to type to run `command` as request `id`.
pub fn command_text(id: u64, command: &str) -> String {
    let quoted = command.replace('\'', r"'\''");
    // ^U first: drop whatever is left on the shell's input line.
    format!("\x15printf '%s%s\\n' '@@S' '{id}@@'; eval '{quoted}'; printf '\\n%s%s %s\\n' '@@E' '{id}@@' \"$?\"\n")
}

/// The text to type to check that the shell answers (request `id`).
pub fn probe_text(id: u64) -> String {
    format!("\x15printf '%s%s\\n' '@@R' '{id}@@'\n")
}

/// Whether `line` is the answer to a probe.
pub fn is_probe_answer(line: &str) -> bool {
    line.strip_prefix("@@R")
        .and_then(|r| r.strip_suffix("@@"))
        .is_some_and(|n| n.parse::<u64>().is_ok())
}

/// The job id a command printed alone on its line (`clump run --detach`: 8 hex digits).
pub fn job_id(output: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 8 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// Whether `line` is a daemon's log line (`clumpd: [   23.955]  INFO ...`). The daemons log to the
/// console the shell shares, so their lines can fall between a command's own.
pub fn is_daemon_log(line: &str) -> bool {
    let Some((name, rest)) = line.trim_start().split_once(": [") else {
        return false;
    };
    let named = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    named
        && rest.split_once(']').is_some_and(|(time, _)| {
            let time = time.trim();
            !time.is_empty() && time.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
}

/// The exit code and output of request `id`, if both markers are in `lines`.
///
/// The output is the lines between the markers, daemons' log lines left out; the end marker starts
/// with a newline of its own, so the last (empty, or unterminated) line before it is the command's
/// output without a final newline.
pub fn parse_result(id: u64, lines: &[String]) -> Option<(i32, String)> {
    let start_marker = format!("@@S{id}@@");
    let end_prefix = format!("@@E{id}@@ ");
    let start = lines.iter().position(|l| *l == start_marker)?;
    let (end, code) = lines[start + 1..].iter().enumerate().find_map(|(i, l)| {
        let code = l.strip_prefix(&end_prefix)?.trim().parse::<i32>().ok()?;
        Some((start + 1 + i, code))
    })?;
    let mut output: Vec<&str> = lines[start + 1..end]
        .iter()
        .map(String::as_str)
        .filter(|l| !is_daemon_log(l))
        .collect();
    if output.last().is_some_and(|l| l.is_empty()) {
        output.pop();
    }
    Some((code, output.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_is_found_alone_on_its_line() {
        assert_eq!(
            job_id("clump# \r\n0a1b2c3d\r\nclump# ").as_deref(),
            Some("0a1b2c3d")
        );
        assert_eq!(job_id("job 0a1b2c3d moved"), None);
        assert_eq!(job_id("0a1b2c3g"), None);
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_echo_of_the_typed_command_is_not_a_marker() {
        let typed = command_text(7, "echo hi");
        let echoed = lines(&format!("clump# {typed}"));
        assert_eq!(parse_result(7, &echoed), None);
        // Even when the echo lands at the start of a line.
        assert_eq!(parse_result(7, &lines(&typed.replace('\x15', ""))), None);
        assert!(!typed.contains("@@S7@@") && !typed.contains("@@E7@@"));
    }

    #[test]
    fn the_command_is_quoted_for_eval() {
        let typed = command_text(1, "echo 'a b' & wait");
        assert!(typed.contains(r"eval 'echo '\''a b'\'' & wait';"), "{typed}");
        assert_eq!(typed.matches('\n').count(), 1, "one line: {typed:?}");
    }

    #[test]
    fn output_and_code_between_markers() {
        let log = lines(
            "clump# \u{15}printf '%s%s\\n' '@@S' '3@@'; ls /nope\n@@S3@@\nls: /nope: No such file\n\n@@E3@@ 1\nclump# ",
        );
        assert_eq!(parse_result(3, &log), Some((1, "ls: /nope: No such file".into())));
    }

    #[test]
    fn output_without_final_newline_and_empty_output() {
        assert_eq!(
            parse_result(1, &lines("@@S1@@\nabc\n@@E1@@ 0")),
            Some((0, "abc".into()))
        );
        assert_eq!(
            parse_result(2, &lines("@@S2@@\n\n@@E2@@ 0")),
            Some((0, String::new()))
        );
    }

    #[test]
    fn daemon_log_lines_are_left_out_of_the_output() {
        let log = lines(
            "@@S4@@\nclumpd: [   23.955]  INFO serving job streams me=10.0.0.1:7171\n0\n\r clump-netd: [1.5] WARN x\n\n@@E4@@ 0",
        );
        assert_eq!(parse_result(4, &log), Some((0, "0".into())));
        for kept in ["clump: job 1 was lost", "a: [b] c", "x: [] y", "Nodes: [3] up"] {
            assert!(!is_daemon_log(kept), "{kept}");
        }
    }

    #[test]
    fn other_requests_and_unfinished_output_do_not_match() {
        let log = lines("@@S1@@\nx\n@@E1@@ 0\n@@S2@@\nstill running");
        assert_eq!(parse_result(2, &log), None);
        assert_eq!(parse_result(12, &lines("@@S1@@\n@@E12@@ 0")), None);
        assert_eq!(parse_result(1, &lines("@@S1@@\n@@E1@@ notanumber")), None);
    }

    #[test]
    fn probe_answers() {
        assert!(is_probe_answer("@@R12@@"));
        assert!(!is_probe_answer("clump# printf '%s%s\\n' '@@R' '12@@'"));
        assert!(!is_probe_answer("@@R@@"));
    }
}
