//! Helpers shared by the integration tests: privilege checks that skip
//! outside CI and fail under `CI=true`, building the C workloads, recording
//! them with the real binary, and reading the trace back.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
};

use tracelog::{Event, EventKind, Syscall, Trace};

pub fn uniplay() -> &'static str {
    env!("CARGO_BIN_EXE_uniplay")
}

/// True when this test can record (root with BPF on a kernel with BTF).
/// Outside CI a test that cannot prints one line and skips; under `CI=true`
/// it fails instead, so CI can never pass by skipping.
pub fn can_record() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("kernel has no BTF")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("this test needs to record with eBPF but cannot: {why}")
        }
        Some(why) => {
            eprintln!("skipped: cannot record with eBPF here ({why})");
            false
        }
    }
}

/// Recordings in one test binary run one at a time: they compete for the
/// same two CPUs, and the loss test wants a quiet machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds `tests/workloads/NAME.c` (once per test binary run).
pub fn workload(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("workload-{name}"));
    let fresh = out
        .metadata()
        .and_then(|o| Ok(o.modified()? >= src.metadata()?.modified()?))
        .unwrap_or(false);
    if !fresh {
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("gcc")
            .args(["-O1", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run gcc");
        assert!(st.success(), "gcc failed on {}", src.display());
        std::fs::rename(&tmp, &out).expect("install workload");
    }
    out
}

/// A finished `uniplay record`; its trace is kept on disk if the test fails.
pub struct Recording {
    dir: Option<tempfile::TempDir>,
    pub trace: PathBuf,
    pub output: Output,
}

impl Recording {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn open(&self) -> Trace {
        Trace::open(&self.trace).unwrap_or_else(|e| panic!("open {}: {e}", self.trace.display()))
    }
    /// All events; panics on damage.
    pub fn events(&self) -> Vec<Event> {
        self.open()
            .events()
            .collect::<Result<_, _>>()
            .expect("trace reads back whole")
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "trace kept for inspection: {}",
                    kept.join("trace").display()
                );
                eprintln!(
                    "uniplay stderr: {}",
                    String::from_utf8_lossy(&self.output.stderr)
                );
            }
        }
    }
}

/// Runs `uniplay record -o TMP/trace EXTRA... -- CMD...`.
pub fn record(extra: &[&str], cmd: &[&str]) -> Recording {
    record_with_env(&[], extra, cmd)
}

/// [`record`] with these environment variables set for uniplay.
pub fn record_with_env(env: &[(&str, &str)], extra: &[&str], cmd: &[&str]) -> Recording {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("trace");
    let output = Command::new(uniplay())
        .envs(env.iter().copied())
        .args(["record", "--quiet", "-o"])
        .arg(&trace)
        .args(extra)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run uniplay");
    Recording {
        dir: Some(dir),
        trace,
        output,
    }
}

/// The syscall events named `name`, with their event.
pub fn syscalls<'a>(events: &'a [Event], name: &str) -> Vec<(&'a Event, &'a Syscall)> {
    let nr = recorder_common::number(name).unwrap_or_else(|| panic!("no syscall {name}"));
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Syscall(s) if s.nr == nr => Some((e, s)),
            _ => None,
        })
        .collect()
}

/// Asserts a recording finished with no loss and a complete trace.
pub fn assert_complete(r: &Recording) {
    let t = r.open();
    let m = t.meta();
    assert_eq!(m.losses.ring_full, 0, "events lost; stderr: {}", r.stderr());
    assert_eq!(
        m.losses.incomplete_copies,
        0,
        "outputs cut; stderr: {}",
        r.stderr()
    );
    assert_eq!(
        t.state(),
        tracelog::TraceState::Complete,
        "stderr: {}",
        r.stderr()
    );
    assert!(t.damage().is_none());
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts `cmd` (stdout piped) and waits for its first line, which a
/// target to attach to prints once it is ready.
pub fn spawn_until_line(cmd: &mut Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("first line");
    (child, line)
}

/// A child process killed (and reaped) when dropped, so that a failed
/// assertion does not leave it running into later tests.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the recorder writing `trace` has stored its first
/// checkpoint (it is recording from then on; a cold start can take more
/// than a second), at most 30 s, then `settle` more.
pub fn wait_until_recording(trace: &Path, settle: std::time::Duration) {
    let first = trace.join("checkpoints").join("000000");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !first.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(settle);
}
