//! The guest's process list, read from /proc/*/stat.

/// Prints `pid (comm) state ppid` for every process (the rest of each stat line is cut). Processes
/// that end while it runs make `sed` fail on their file: that is not an error.
pub const PS_COMMAND: &str = r"sed 's/) \(.\) \([0-9]*\) .*/) \1 \2/' /proc/[0-9]*/stat 2>/dev/null; true";

/// One process of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub ppid: u32,
}

impl Proc {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Parses the output of [`PS_COMMAND`]; lines that are not process lines (e.g. PID 1's log lines on
/// the same console) are skipped. `comm` may hold spaces and parentheses: it ends at the last `) `.
pub fn parse_procs(output: &str) -> Vec<Proc> {
    output.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Proc> {
    let (pid, rest) = line.trim_end().split_once(" (")?;
    let (comm, tail) = rest.rsplit_once(") ")?;
    let mut fields = tail.split(' ');
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let mut state_chars = state.chars();
    let (Some(state), None) = (state_chars.next(), state_chars.next()) else {
        return None;
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Proc {
        pid: pid.parse().ok()?,
        comm: comm.to_owned(),
        state,
        ppid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_processes_and_skips_noise() {
        let out = "1 (init) S 0\n\
                   42 (sleep) Z 1\n\
                   clump: service name=shell-tty2 pid=7 started\n\
                   77 (we ird) (x)) R 42\n\
                   sed: /proc/99/stat: No such file\n\
                   5 (x) SS 1\n";
        let procs = parse_procs(out);
        assert_eq!(procs.len(), 3, "{procs:?}");
        assert_eq!(
            procs[0],
            Proc {
                pid: 1,
                comm: "init".into(),
                state: 'S',
                ppid: 0
            }
        );
        assert!(procs[1].is_zombie());
        assert_eq!(procs[2].comm, "we ird) (x)");
        assert_eq!(procs[2].ppid, 42);
    }
}
