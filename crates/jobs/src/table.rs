//! The job table of one node (sans-I/O): ids, who may do what, and how long ended jobs stay.
//!
//! Job ids are 8 lowercase hex digits drawn at random (re-drawn on a clash with a job held).
//! Random rather than `<node>.<counter>`: the id must stay the job's name when it migrates and
//! must not clash with ids other nodes hand out, and a node number is not known before the lease.

use crate::buffer::OutputBuffer;
use clump_api::{ExitStatus, JobInfo, JobState};
use std::collections::BTreeMap;

/// Ended jobs kept for `ps`, `output` and `wait`; beyond this the oldest ended job is forgotten.
pub const MAX_ENDED: usize = 256;
/// Running jobs at once on one node.
pub const MAX_RUNNING: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("no job {0} on this node")]
    NotFound(String),
    #[error("job {job} belongs to uid {owner}: only its owner or root may do that")]
    NotYours { job: String, owner: u32 },
    #[error("this node already runs {0} jobs")]
    Full(usize),
}

#[derive(Debug)]
pub struct Job {
    pub info: JobInfo,
    pub output: OutputBuffer,
    /// Order of start, to forget the oldest ended job first.
    serial: u64,
}

impl Job {
    pub fn is_running(&self) -> bool {
        self.info.state == Some(JobState::Running)
    }
}

#[derive(Debug, Default)]
pub struct JobTable {
    jobs: BTreeMap<String, Job>,
    serial: u64,
}

/// Formats a random draw as a job id.
pub fn format_id(draw: u32) -> String {
    format!("{draw:08x}")
}

impl JobTable {
    pub fn new() -> JobTable {
        JobTable::default()
    }

    /// A fresh id from `draw` (a source of random numbers), never one held.
    pub fn allocate_id(&self, mut draw: impl FnMut() -> u32) -> String {
        loop {
            let id = format_id(draw());
            if !self.jobs.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn check_room(&self) -> Result<(), TableError> {
        let running = self.running();
        if running >= MAX_RUNNING {
            return Err(TableError::Full(running));
        }
        Ok(())
    }

    /// Adds a running job, forgetting the oldest ended ones beyond [`MAX_ENDED`].
    pub fn insert(&mut self, info: JobInfo, cap: usize) {
        self.serial += 1;
        let job = Job {
            info,
            output: OutputBuffer::new(cap),
            serial: self.serial,
        };
        self.jobs.insert(job.info.id.clone(), job);
        let mut ended: Vec<(u64, String)> = self
            .jobs
            .values()
            .filter(|j| !j.is_running())
            .map(|j| (j.serial, j.info.id.clone()))
            .collect();
        if ended.len() > MAX_ENDED {
            ended.sort();
            for (_, id) in &ended[..ended.len() - MAX_ENDED] {
                self.jobs.remove(id);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id)
    }

    /// The job, if `uid` may read its output or act on it: its owner or root.
    pub fn owned(&mut self, id: &str, uid: u32) -> Result<&mut Job, TableError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| TableError::NotFound(id.into()))?;
        if uid != 0 && uid != job.info.uid {
            return Err(TableError::NotYours {
                job: id.into(),
                owner: job.info.uid,
            });
        }
        Ok(job)
    }

    /// Records how the job ended.
    pub fn finish(&mut self, id: &str, status: Option<ExitStatus>) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.info.state = Some(match status {
                Some(ExitStatus { signal: Some(_), .. }) => JobState::Killed,
                Some(_) => JobState::Exited,
                None => JobState::Lost,
            });
            job.info.exit = status;
        }
    }

    /// Forgets a job (a guest that moved on).
    pub fn remove(&mut self, id: &str) -> Option<Job> {
        self.jobs.remove(id)
    }

    pub fn running(&self) -> usize {
        self.jobs.values().filter(|j| j.is_running()).count()
    }

    /// Every job, oldest first, with its output counters filled in.
    pub fn list(&self) -> Vec<JobInfo> {
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by_key(|j| j.serial);
        jobs.into_iter()
            .map(|j| JobInfo {
                output_bytes: j.output.end(),
                dropped_bytes: j.output.dropped(),
                ..j.info.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, uid: u32) -> JobInfo {
        JobInfo {
            id: id.into(),
            argv: vec!["sleep".into(), "9".into()],
            uid,
            state: Some(JobState::Running),
            ..JobInfo::default()
        }
    }

    #[test]
    fn ids_are_eight_hex_digits_and_never_clash() {
        let mut t = JobTable::new();
        assert_eq!(format_id(0xab), "000000ab");
        t.insert(info("000000ab", 0), 16);
        let mut draws = [0xab, 0xab, 0x1234_5678].into_iter();
        assert_eq!(t.allocate_id(|| draws.next().unwrap_or(0)), "12345678");
    }

    #[test]
    fn only_the_owner_or_root_may_act() {
        let mut t = JobTable::new();
        t.insert(info("a", 1000), 16);
        assert!(t.owned("a", 1000).is_ok());
        assert!(t.owned("a", 0).is_ok());
        assert_eq!(
            t.owned("a", 65534).err(),
            Some(TableError::NotYours {
                job: "a".into(),
                owner: 1000
            })
        );
        assert_eq!(t.owned("b", 0).err(), Some(TableError::NotFound("b".into())));
        assert_eq!(
            TableError::NotYours {
                job: "a".into(),
                owner: 1000
            }
            .to_string(),
            "job a belongs to uid 1000: only its owner or root may do that"
        );
    }

    #[test]
    fn ending_sets_the_state_from_the_status() {
        let mut t = JobTable::new();
        for id in ["a", "b", "c"] {
            t.insert(info(id, 0), 16);
        }
        t.finish("a", Some(ExitStatus::code(3)));
        t.finish("b", Some(ExitStatus::signal(15)));
        t.finish("c", None);
        let states: Vec<_> = t.list().iter().map(|j| j.state).collect();
        assert_eq!(
            states,
            [
                Some(JobState::Exited),
                Some(JobState::Killed),
                Some(JobState::Lost)
            ]
        );
        assert_eq!(t.running(), 0);
        assert_eq!(t.get("a").and_then(|j| j.info.exit), Some(ExitStatus::code(3)));
    }

    #[test]
    fn the_oldest_ended_jobs_are_forgotten_first_and_running_ones_never() {
        let mut t = JobTable::new();
        t.insert(info("running", 0), 16);
        for i in 0..MAX_ENDED + 5 {
            let id = format!("e{i}");
            t.insert(info(&id, 0), 16);
            t.finish(&id, Some(ExitStatus::code(0)));
        }
        t.insert(info("last", 0), 16);
        assert!(t.get("running").is_some());
        assert!(t.get("e0").is_none() && t.get("e4").is_none());
        assert!(t.get("e5").is_some());
        assert_eq!(t.list().len(), MAX_ENDED + 2);
        assert_eq!(t.list()[0].id, "running");
    }
}
