//! The screen without a framebuffer: the node table as text on tty1, redrawn in place every few
//! seconds (never on the serial console, which PID 1 and the shell use).

use crate::vt::Vt;
use clump_screen::{Phase, StageStatus, View};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct TextScreen {
    last: Option<(Instant, String)>,
}

impl TextScreen {
    pub fn draw(&mut self, vt: &Vt, view: &View) {
        let body = render(view);
        let due = self
            .last
            .as_ref()
            .is_none_or(|(at, old)| *old != body || at.elapsed() >= EVERY);
        if !due {
            return;
        }
        // Home, clear, then the frame: one write, so PID 1's lines in between are wiped next time.
        let frame = format!("\x1b[H\x1b[J{body}");
        if let Err(e) = vt.write_all(frame.replace('\n', "\r\n").as_bytes()) {
            tracing::debug!(error = %e, "cannot write the text screen");
        }
        self.last = Some((Instant::now(), body));
    }
}

/// The text of one frame.
pub fn render(view: &View) -> String {
    let mut out = format!(
        "Clump cluster \"{}\"   this node {} ({})\n",
        view.cluster, view.address, view.lease
    );
    if let Some(n) = &view.notice {
        out.push_str(&format!("!! {n}\n"));
    }
    out.push('\n');
    match &view.phase {
        Phase::Boot(stages) => {
            for s in stages {
                let mark = match s.status {
                    StageStatus::Pending => "[    ]",
                    StageStatus::Running => "[ .. ]",
                    StageStatus::Done => "[ ok ]",
                    StageStatus::Failed => "[FAIL]",
                };
                out.push_str(&format!("{mark} {:<14} {}\n", s.name, s.detail));
            }
        }
        Phase::Cluster => {
            if let Some(map) = &view.map {
                out.push_str(&clump_api::table::nodes(map, view.now_ms));
            }
        }
    }
    let recent = view.events.iter().rev().take(5).collect::<Vec<_>>();
    if !recent.is_empty() {
        out.push('\n');
        for e in recent.into_iter().rev() {
            out.push_str(&clump_api::table::event(e));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out.push_str("\nEsc: power off    F2: shell (Alt-F1 comes back)\n");
    out
}
