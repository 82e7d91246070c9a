//! Golden tests for `uniplay inspect`: a fixed trace (tests/support/
//! inspect_fixture.rs, with two checkpoints) is rendered with `--events`,
//! `--json`, `--checkpoint`, `--summary --json` and the default summary, and
//! compared with tests/golden/inspect_*.
//!
//! To accept a deliberate change of the output, re-bless the golden files:
//!
//!     UNIPLAY_BLESS=1 cargo test --test inspect_golden
//!
//! and review the diff of tests/golden/ before committing it.

#[path = "support/inspect_fixture.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

fn inspect(trace: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_uniplay"))
        .arg("inspect")
        .arg(trace)
        .args(args)
        .output()
        .expect("run uniplay");
    assert!(
        out.status.success(),
        "uniplay inspect {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UNIPLAY_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UNIPLAY_BLESS=1 cargo test --test inspect_golden",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .collect();
        panic!(
            "{name} differs from the golden file ({} vs {} lines){}\n{}\nIf the change is intended: UNIPLAY_BLESS=1 cargo test --test inspect_golden",
            expected.lines().count(),
            actual.lines().count(),
            if diff.is_empty() { " (only in length)" } else { "" },
            diff.join("\n")
        );
    }
}

fn fixture_trace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fixture::write(&dir.path().join("t"), 16384);
    dir
}

#[test]
fn inspect_golden_events() {
    let dir = fixture_trace();
    golden(
        "inspect_events.txt",
        &inspect(&dir.path().join("t"), &["--events"]),
    );
}

#[test]
fn inspect_golden_json() {
    let dir = fixture_trace();
    let text = inspect(&dir.path().join("t"), &["--json"]);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        for key in ["seq", "epoch", "time_ns", "pid", "tid", "cpu", "kind"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    assert_eq!(text.lines().count(), fixture::events().len());
    golden("inspect_events.jsonl", &text);
}

#[test]
fn inspect_golden_summary_json() {
    let dir = fixture_trace();
    let text = inspect(&dir.path().join("t"), &["--summary", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("summary is JSON");
    assert_eq!(v["complete"], true);
    assert_eq!(v["lost_events"], 3);
    assert_eq!(v["syscalls"]["read"]["calls"], 3);
    assert_eq!(v["bytes_read"], 68);
    golden("inspect_summary.json", &text);
}

#[test]
fn inspect_golden_summary_text() {
    let dir = fixture_trace();
    golden("inspect_summary.txt", &inspect(&dir.path().join("t"), &[]));
}

#[test]
fn inspect_golden_checkpoint_text() {
    let dir = fixture_trace();
    golden(
        "inspect_checkpoint.txt",
        &inspect(&dir.path().join("t"), &["--checkpoint", "1"]),
    );
}

#[test]
fn inspect_golden_checkpoint_json() {
    let dir = fixture_trace();
    let text = inspect(&dir.path().join("t"), &["--checkpoint", "0", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("checkpoint is JSON");
    assert_eq!(v["epoch"], 0);
    golden("inspect_checkpoint.json", &text);
}
