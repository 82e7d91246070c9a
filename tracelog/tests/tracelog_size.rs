//! Size and speed targets of the event encoding.

mod support;

use std::time::Instant;

use support::*;
use tracelog::Trace;

/// Hard target: syscall-heavy traces without payloads cost at most 6 bytes
/// per event on disk (events.tlf + index.tlf, after zstd).
#[test]
fn bytes_per_event_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let n = 1_000_000;
    let events = synthetic(n, 42);
    write_trace(&d, &events, opts(16384));
    let size: u64 = ["events.tlf", "index.tlf"]
        .iter()
        .map(|f| std::fs::metadata(d.join(f)).unwrap().len())
        .sum();
    let per_event = size as f64 / n as f64;
    println!("bytes/event: {per_event:.3} ({size} bytes for {n} events)");
    assert!(per_event <= 6.0, "{per_event:.3} bytes/event, target is 6");

    // Spot-check that the data is really there.
    let t = Trace::open(&d).unwrap();
    let (got, err) = drain(t.events_from_seq(n as u64 - 10));
    assert!(err.is_none());
    assert_eq!(got, expected(&events)[n - 10..]);
}

/// Read throughput (target ≥ 10M events/s on one core, release mode):
/// `cargo test -p tracelog --release --test tracelog_size -- --ignored --nocapture`
#[test]
#[ignore]
fn read_speed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("t");
    let n = 4_000_000;
    write_trace(&d, &synthetic(n, 5), opts(16384));
    let t = Trace::open(&d).unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut count = 0u64;
        let mut sum = 0u64;
        for e in t.events() {
            let e = e.unwrap();
            count += 1;
            sum = sum.wrapping_add(e.time_ns);
        }
        assert_eq!(count, n as u64);
        std::hint::black_box(sum);
        best = best.min(start.elapsed().as_secs_f64());
    }
    let rate = n as f64 / best;
    println!("read: {:.1} M events/s", rate / 1e6);
    if !cfg!(debug_assertions) {
        assert!(rate >= 10e6, "{:.1} M events/s, target is 10", rate / 1e6);
    }
}
