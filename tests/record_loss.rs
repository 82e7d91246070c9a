//! Loss accounting: a tiny ring and a burst must lose events, and the trace
//! and the exit status must say so.

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
