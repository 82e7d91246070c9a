//! Restores every process of every checkpoint of a trace and compares it
//! with the checkpoint it came from: `restore_check TRACE_DIR` (as root).
//! Any difference means restore did not rebuild the recorded state.

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: restore_check TRACE_DIR");
    let t = tracelog::Trace::open(std::path::Path::new(&dir)).unwrap();
    for c in t.checkpoints() {
        let cp = t.checkpoint(c.epoch).unwrap();
        for p in &cp.processes {
            let t0 = std::time::Instant::now();
            let live = match replay::restore(&t, c.epoch, p.pid, Some(0)) {
                Ok(l) => l,
                Err(e) => {
                    println!(
                        "epoch {} pid {} {}: restore failed: {e}",
                        c.epoch, p.pid, p.exe
                    );
                    continue;
                }
            };
            let t1 = t0.elapsed();
            let d = replay::compare(&t, c.epoch, p.pid, &live, &[]).unwrap();
            println!(
                "epoch {} pid {} {} threads {}: restore {t1:?} compare {:?} diffs {}",
                c.epoch,
                p.pid,
                p.exe,
                p.threads.len(),
                t0.elapsed() - t1,
                d.len()
            );
            for x in d.iter().take(10) {
                println!("   {x}");
            }
        }
    }
}
