//! The replay of a whole trace: every epoch that has a checkpoint, J at a
//! time, each on its own core with the thread that drives it; results in
//! epoch order.

use std::{collections::VecDeque, path::Path, sync::Mutex, time::Instant};

use serde::Serialize;
use tracelog::Trace;

use crate::{
    drive::Watchdog,
    epoch::{processes_of, replay_process, Divergence, Knowledge, ProcessOutcome},
    ReplayError,
};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Epochs replayed at once (each pinned to its own CPU).
    pub jobs: usize,
    /// Only this epoch.
    pub epoch: Option<u32>,
}

/// `verified`, `diverged` or `skipped`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Verified,
    Diverged,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub index: u32,
    pub status: Status,
    /// Why an epoch was skipped or diverged, in a sentence.
    pub reason: Option<String>,
    pub events: u64,
    pub threads: usize,
    pub first_divergence: Option<Divergence>,
    pub processes: Vec<ProcessOutcome>,
    pub elapsed_ns: u64,
    pub cpu: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub trace: String,
    pub epochs: Vec<EpochReport>,
    pub verified: usize,
    pub diverged: usize,
    pub skipped: usize,
    /// Every byte the replay handed the kernel (writes, paths) matched the
    /// recording.
    pub outputs_match: bool,
    /// The replayed exit statuses matched the recording (None: no exit was
    /// replayed).
    pub exit_status_match: Option<bool>,
    pub jobs: usize,
    pub elapsed_ns: u64,
}

impl Report {
    /// True when the replay proved the recording: every epoch verified,
    /// outputs and exit status matching.
    pub fn ok(&self) -> bool {
        self.diverged == 0
            && self.skipped == 0
            && self.outputs_match
            && self.exit_status_match != Some(false)
    }
}

/// Replays `dir`. `progress` is told about each finished epoch.
pub fn replay(
    dir: &Path,
    opts: &ReplayOptions,
    progress: &(dyn Fn(&EpochReport) + Sync),
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let trace = Trace::open(dir).map_err(|source| ReplayError::Open { source })?;
    let infos = trace.checkpoints();
    if infos.is_empty() {
        return Err(ReplayError::NoCheckpoints {
            dir: dir.to_path_buf(),
        });
    }
    let mut epochs: Vec<u32> = infos.iter().map(|c| c.epoch).collect();
    if let Some(e) = opts.epoch {
        if !epochs.contains(&e) {
            return Err(ReplayError::NoSuchEpoch {
                epoch: e,
                available: epochs,
            });
        }
        epochs = vec![e];
    }
    let known = Knowledge::gather(&trace);
    let queue = Mutex::new(epochs.iter().copied().collect::<VecDeque<u32>>());
    let results = Mutex::new(Vec::new());
    let ncpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let jobs = opts.jobs.clamp(1, epochs.len().max(1));
    std::thread::scope(|s| {
        for j in 0..jobs {
            let (queue, results, known) = (&queue, &results, &known);
            s.spawn(move || {
                let cpu = j % ncpus;
                pin_self(cpu);
                let watchdog = Watchdog::start();
                let Ok(trace) = Trace::open(dir) else { return };
                loop {
                    let Some(epoch) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        break;
                    };
                    let r = replay_epoch(&trace, epoch, cpu, known, &watchdog);
                    progress(&r);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    let mut epochs = results.into_inner().unwrap_or_else(|e| e.into_inner());
    epochs.sort_by_key(|e| e.index);
    let count = |s: Status| epochs.iter().filter(|e| e.status == s).count();
    let outputs_match = epochs
        .iter()
        .flat_map(|e| &e.processes)
        .all(|p| p.output_mismatches == 0);
    let exits: Vec<bool> = epochs
        .iter()
        .flat_map(|e| &e.processes)
        .filter_map(|p| p.exit_status_match)
        .collect();
    Ok(Report {
        trace: dir.display().to_string(),
        verified: count(Status::Verified),
        diverged: count(Status::Diverged),
        skipped: count(Status::Skipped),
        outputs_match,
        exit_status_match: (!exits.is_empty()).then(|| exits.iter().all(|&b| b)),
        epochs,
        jobs,
        elapsed_ns: started.elapsed().as_nanos() as u64,
    })
}

fn replay_epoch(
    trace: &Trace,
    epoch: u32,
    cpu: usize,
    known: &Knowledge,
    watchdog: &Watchdog,
) -> EpochReport {
    let t0 = Instant::now();
    let mut report = EpochReport {
        index: epoch,
        status: Status::Verified,
        reason: None,
        events: 0,
        threads: 0,
        first_divergence: None,
        processes: Vec::new(),
        elapsed_ns: 0,
        cpu,
    };
    let pids = match processes_of(trace, epoch) {
        Ok(p) => p,
        Err(e) => {
            report.status = Status::Skipped;
            report.reason = Some(format!(
                "checkpoint {epoch} cannot be read: {}",
                error_chain(&e)
            ));
            return report;
        }
    };
    for pid in pids {
        match replay_process(trace, epoch, pid, Some(cpu), known, watchdog) {
            Ok(p) => {
                for p in p.flatten() {
                    report.add(p);
                }
            }
            Err(e) => {
                report.status = Status::Skipped;
                report.reason = Some(format!("process {pid}: {}", error_chain(&e)));
            }
        }
    }
    report.elapsed_ns = t0.elapsed().as_nanos() as u64;
    report
}

impl EpochReport {
    /// Counts one process's outcome in: the first skip, divergence or
    /// difference decides the status and reason.
    fn add(&mut self, p: ProcessOutcome) {
        let pid = p.pid;
        self.events += p.events;
        self.threads += p.threads;
        if self.first_divergence.is_none() {
            self.first_divergence = p.divergence.clone();
        }
        if let Some(why) = &p.skipped {
            if self.status == Status::Verified {
                self.status = Status::Skipped;
                self.reason = Some(format!("process {pid}: {why}"));
            }
        } else if p.divergence.is_some()
            || !p.differences.is_empty()
            || p.exit_status_match == Some(false)
        {
            self.status = Status::Diverged;
            if self.reason.is_none() {
                self.reason = Some(match (&p.divergence, p.differences.first()) {
                    (Some(d), _) => {
                        format!("process {pid}: expected {}, got {}", d.expected, d.actual)
                    }
                    (None, Some(d)) => {
                        format!("process {pid}: state differs from the next checkpoint: {d}")
                    }
                    (None, None) => format!("process {pid}: exit status differs"),
                });
            }
        }
        self.processes.push(p);
    }
}

/// Pins the calling thread (and what it forks) to one CPU.
pub(crate) fn pin_self(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
