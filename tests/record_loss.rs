//! Loss accounting: a tiny ring and a burst must lose events, and the trace
//! and the exit status must say so; a reader faster than the daemon is held
//! while it drains instead.

mod support;

use support::*;
use tracelog::TraceState;

#[test]
fn record_loss_is_counted_and_fails_the_run() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let bin = workload("burst");
    let r = record(&["--ring-size", "4K"], &[bin.to_str().unwrap(), "300000"]);
    assert_eq!(
        r.code(),
        Some(3),
        "lost events must fail `record`; stderr: {}",
        r.stderr()
    );
    assert!(r.stderr().contains("lost"), "stderr: {}", r.stderr());
    let t = r.open();
    assert!(t.meta().losses.ring_full > 0);
    assert!(
        t.meta()
            .losses
            .per_cpu
            .iter()
            .map(|c| c.ring_full)
            .sum::<u64>()
            > 0
    );
    assert!(matches!(t.state(), TraceState::Incomplete { .. }));

    // --allow-loss: same loss, but the command's status.
    let r = record(
        &["--ring-size", "4K", "--allow-loss", "--force"],
        &[bin.to_str().unwrap(), "300000"],
    );
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert!(r.open().meta().losses.ring_full > 0);
}

/// `wc -l` reads a big file from the page cache faster than the daemon can
/// store it: every byte is still recorded, because the supervisor holds the
/// target while the daemon drains rings that fill past a quarter.
#[test]
fn record_loss_none_for_a_fast_reader() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let lines = (256 << 20) / line.len();
    std::fs::write(&file, line.repeat(lines)).unwrap();
    let r = record(&[], &["wc", "-l", file.to_str().unwrap()]);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert!(r.stdout().starts_with(&lines.to_string()), "{}", r.stdout());
    let t = r.open();
    assert_eq!(t.meta().losses.ring_full, 0);
    assert_eq!(t.meta().losses.incomplete_copies, 0);
    let read: u64 = syscalls(&r.events(), "read")
        .iter()
        .filter(|(_, s)| s.ret > 0)
        .map(|(_, s)| s.ret as u64)
        .sum();
    assert!(
        read >= (lines * line.len()) as u64,
        "{read} bytes read recorded"
    );
}

/// One `read` of 20 MiB (as `sort` or Python's `f.read()` read a whole
/// file): more than the 16 MiB ring holds at once. The thread is held as it
/// returns and the daemon reads the bytes from its memory: recorded whole.
/// Without a supervisor to hold it (`--no-checkpoints`) the output is cut
/// and counted as a loss.
#[test]
fn record_loss_none_for_a_read_larger_than_the_ring() {
    if !can_record() {
        return;
    }
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let len: usize = 20 << 20;
    let content: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let input = format!("if={}", file.display());
    let dd = ["dd", input.as_str(), "of=/dev/null", "bs=20M", "count=1"];

    let r = record(&["--ring-size", "16M"], &dd);
    assert_eq!(r.code(), Some(0), "stderr: {}", r.stderr());
    assert_eq!(r.open().meta().losses.incomplete_copies, 0);
    let events = r.events();
    let whole = syscalls(&events, "read").iter().any(|(_, s)| {
        let data: Vec<u8> = s.outputs.iter().flat_map(|o| o.data.to_vec()).collect();
        s.ret == len as i64 && s.outputs.iter().all(|o| o.complete) && data == content
    });
    assert!(whole, "no read of {len} bytes recorded whole");

    let unheld = record(&["--ring-size", "16M", "--no-checkpoints"], &dd);
    assert_eq!(unheld.code(), Some(3), "stderr: {}", unheld.stderr());
    assert!(unheld.open().meta().losses.incomplete_copies > 0);
}
