//! `uniplay inspect` behaviour beyond the golden outputs: the Perfetto
//! export's structure, filters, damaged and foreign traces, bad arguments.
//! Traces are built with tracelog::TraceWriter, so no root is needed.

#[path = "support/inspect_fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn uniplay(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uniplay"))
        .args(args)
        .output()
        .expect("run uniplay")
}

fn inspect(trace: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&std::ffi::OsStr> = vec!["inspect".as_ref(), trace.as_os_str()];
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    uniplay(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture_trace(frame_events: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    fixture::write(&t, frame_events);
    (dir, t)
}

#[test]
fn inspect_perfetto_is_valid_trace_event_json() {
    let (dir, t) = fixture_trace(16384);
    let file = dir.path().join("p.json");
    let o = inspect(&t, &["--perfetto", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).expect("valid JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents array");
    assert!(!events.is_empty());
    let mut open: HashMap<(u64, u64), i64> = HashMap::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("no ts: {e}"));
        let pid = e["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {e}"));
        let tid = e["tid"].as_u64().unwrap_or_else(|| panic!("no tid: {e}"));
        assert!(ts >= 0.0, "negative ts: {e}");
        assert!(e["name"].is_string(), "no name: {e}");
        match ph {
            "X" => {
                let dur = e["dur"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("X without dur: {e}"));
                assert!(dur >= 0.0, "negative dur: {e}");
            }
            "B" => *open.entry((pid, tid)).or_default() += 1,
            "E" => {
                let n = open.entry((pid, tid)).or_default();
                *n -= 1;
                assert!(*n >= 0, "E without B: {e}");
            }
            "i" => assert!(
                matches!(e["s"].as_str(), Some("t" | "p" | "g")),
                "bad scope: {e}"
            ),
            "M" => assert!(e["args"].is_object(), "M without args: {e}"),
            other => panic!("unexpected ph {other}: {e}"),
        }
    }
    assert!(open.values().all(|n| *n == 0), "unbalanced B/E");
    // X slices on one track nest properly (touching is fine).
    let mut tracks: HashMap<(u64, u64), Vec<(f64, f64)>> = HashMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let ts = e["ts"].as_f64().unwrap();
        let end = ts + e["dur"].as_f64().unwrap();
        let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        tracks.entry(key).or_default().push((ts, end));
    }
    for (track, mut slices) in tracks {
        slices.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<f64> = Vec::new();
        for (ts, end) in slices {
            while stack.last().is_some_and(|&top| top <= ts + 1e-6) {
                stack.pop();
            }
            if let Some(&top) = stack.last() {
                assert!(end <= top + 1e-6, "slices overlap on track {track:?}");
            }
            stack.push(end);
        }
    }

    let find = |pred: &dyn Fn(&Value) -> bool| events.iter().filter(|e| pred(e)).count();
    // Names from the exec.
    assert_eq!(
        find(&|e| e["ph"] == "M"
            && e["name"] == "process_name"
            && e["pid"] == fixture::ROOT
            && e["args"]["name"] == "demo"),
        1
    );
    // Syscall slices on the thread, with the result.
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "read")
        .collect();
    assert_eq!(reads.len(), 3);
    assert_eq!(reads[0]["args"]["ret"], 16);
    assert_eq!(reads[0]["dur"].as_f64(), Some(5.0));
    assert_eq!(reads[0]["tid"], fixture::ROOT);
    // Scheduling: blocked from 100us to 250us, then running again.
    let blocked: Vec<&Value> = events.iter().filter(|e| e["name"] == "blocked").collect();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let t0 = events
        .iter()
        .filter(|e| e["ph"] != "M")
        .map(|e| e["ts"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    assert_eq!(t0, 0.0, "times start at the earliest event");
    assert_eq!(blocked[0]["ts"].as_f64(), Some(100.0));
    assert_eq!(blocked[0]["dur"].as_f64(), Some(150.0));
    assert!(find(&|e| e["name"] == "running") >= 3);
    // Signals and epochs.
    assert_eq!(
        find(&|e| e["ph"] == "i" && e["name"] == "SIGINT delivered"),
        1
    );
    assert_eq!(
        find(&|e| e["ph"] == "i" && e["s"] == "g" && e["name"] == "epoch 1"),
        1
    );
}

#[test]
fn inspect_filters() {
    let (_dir, t) = fixture_trace(16384);
    let o = inspect(&t, &["--events", "--tid", "101"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.is_empty());
    for line in text.lines() {
        let tid = line.split_whitespace().nth(1).unwrap();
        assert!(tid == "101" || line.contains("next=101"), "{line}");
    }

    let o = inspect(
        &t,
        &["--events", "--syscall", "read", "--syscall", "openat"],
    );
    let text = stdout(&o);
    assert!(text.lines().any(|l| l.contains(" read(")));
    assert!(!text.contains("pread64(") && !text.contains("switch ") && !text.contains("wait4("));
    assert!(text.contains("+++ exec"), "lifecycle events stay");

    // --from/--to use the listing's relative seconds, [from, to).
    let o = inspect(&t, &["--json", "--from", "0.0003", "--to", "0.0005"]);
    let times: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["time_ns"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(!times.is_empty());
    assert!(times
        .iter()
        .all(|t| (fixture::T0 + 300_000..fixture::T0 + 500_000).contains(t)));

    let o = inspect(&t, &["--events", "--no-switches"]);
    assert!(!stdout(&o).contains("switch "));
}

#[test]
fn inspect_unknown_syscall_is_a_usage_error() {
    let (_dir, t) = fixture_trace(16384);
    let o = inspect(&t, &["--events", "--syscall", "nosuchcall"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--syscall nosuchcall: unknown syscall name"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn inspect_damaged_trace_lists_intact_events_then_fails() {
    let (_dir, t) = fixture_trace(4);
    let (last, intact) = {
        let trace = tracelog::Trace::open(&t).unwrap();
        let frames = trace.frames();
        assert!(frames.len() > 2);
        let last = *frames.last().unwrap();
        (last, last.first_seq)
    };
    // Cut the last frame in the middle of its payload.
    let events = t.join("events.tlf");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&events)
        .unwrap();
    f.set_len(last.offset + 64 + u64::from(last.compressed_len) / 2)
        .unwrap();
    drop(f);

    for args in [&["--events"][..], &["--json"][..]] {
        let o = inspect(&t, args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).lines().count() as u64, intact, "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("uniplay: error: "), "{err}");
        assert!(
            err.contains(&format!("damaged at byte offset {}", last.offset)),
            "{err}"
        );
    }

    // The summary says so, prominently, and succeeds.
    let o = inspect(&t, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("DAMAGED"), "{text}");
    assert!(text.contains(&format!("byte offset {}", last.offset)));
    let o = inspect(&t, &["--summary", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["events"].as_u64(), Some(intact));
    assert!(v["damage"]
        .as_str()
        .unwrap()
        .contains("damaged at byte offset"));
}

#[test]
fn inspect_foreign_version_is_one_line_exit_5() {
    let (_dir, t) = fixture_trace(16384);
    let meta_path = t.join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["format_version"] = 99.into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    for args in [&[][..], &["--events"][..], &["--json"][..]] {
        let o = inspect(&t, args);
        assert_eq!(o.status.code(), Some(5), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("trace format version 99, this uniplay reads version 2"),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn inspect_missing_trace_is_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let o = inspect(&dir.path().join("nope"), &[]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a trace directory"));
}

#[test]
fn inspect_summary_rejects_filters() {
    let (_dir, t) = fixture_trace(16384);
    let o = inspect(&t, &["--tid", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--events"));
}

#[test]
fn inspect_checkpoint_detail() {
    let (_dir, t) = fixture_trace(16384);
    let o = inspect(&t, &["--checkpoint", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("checkpoint  epoch 1 (timer)"), "{text}");
    assert!(text.contains("events      18..24 (7 events)"), "{text}");
    assert!(text.contains("stopped     0.750 ms"), "{text}");
    assert!(
        text.contains("rip 0x555555554a2f rsp 0x7ffd00003f00 fs_base 0x7f0000000740  in wait4  sigmask 0x10000"),
        "{text}"
    );
    assert!(
        text.contains("7ffd00000000-7ffd00004000 rw-p 00000000 00:00 0 [stack]  [stored]"),
        "{text}"
    );
    assert!(
        text.contains("/usr/bin/demo  [file 3f2a1b9c0d4e]"),
        "{text}"
    );
    assert!(text.contains("SIGPIPE   handler SIG_IGN"), "{text}");

    let o = inspect(&t, &["--checkpoint", "0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["epoch"], 0);
    assert_eq!(v["reason"], "start");
    assert_eq!(v["first_seq"], 0);
    assert_eq!(v["last_seq"], 17);
    assert_eq!(v["stop_ns"], 1_250_000);
    assert_eq!(v["pages"], 2);
    let p = &v["processes"][0];
    assert_eq!(p["pid"], fixture::ROOT);
    assert_eq!(p["pages_stored"], 2);
    assert_eq!(p["full"], true);
    assert_eq!(p["threads"][0]["rip"], 0x5555_5555_4000u64);
    assert_eq!(p["threads"][0]["syscall"], Value::Null);
    assert_eq!(p["maps"].as_array().unwrap().len(), 3);
    assert_eq!(p["maps"][0]["file"], fixture::DEMO_HASH);
    assert_eq!(p["fds"][2]["path"], "/etc/demo.conf");
    assert_eq!(p["sigactions"][0]["name"], "SIGINT");

    // The summary lists both checkpoints.
    let o = inspect(&t, &["--summary", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cps = v["checkpoints"].as_array().unwrap();
    assert_eq!(cps.len(), 2);
    assert_eq!(cps[1]["first_seq"], 18);
    assert_eq!(cps[1]["last_seq"], 24);
    assert_eq!(v["first_epoch"], 0);
}

#[test]
fn inspect_unknown_checkpoint_is_one_line_exit_5() {
    let (_dir, t) = fixture_trace(16384);
    for args in [
        &["--checkpoint", "7"][..],
        &["--checkpoint", "7", "--json"][..],
    ] {
        let o = inspect(&t, args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("no checkpoint for epoch 7; checkpoints exist for epochs 0..1"),
            "{err}"
        );
        assert!(stdout(&o).is_empty());
    }
    // Filters make no sense for a checkpoint.
    let o = inspect(&t, &["--checkpoint", "0", "--tid", "100"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn inspect_reports_damaged_checkpoints() {
    let (_dir, t) = fixture_trace(16384);
    // An incomplete checkpoint: the recorder died while writing it.
    std::fs::remove_file(t.join("checkpoints/000001/state.json")).unwrap();
    let o = inspect(&t, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("1 checkpoint: 2 pages"), "{text}");
    assert!(
        text.contains("checkpoint damage: ") && text.contains("incomplete checkpoint"),
        "{text}"
    );
    let o = inspect(&t, &["--summary", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checkpoints"].as_array().unwrap().len(), 1);
    assert_eq!(v["checkpoint_damage"].as_array().unwrap().len(), 1);
    let o = inspect(&t, &["--checkpoint", "1"]);
    assert_eq!(o.status.code(), Some(5));
}
