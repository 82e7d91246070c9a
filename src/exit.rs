//! Exit codes, and printing an error chain once, on one line.

pub const FAILURE: i32 = 1;
pub const LOST_EVENTS: i32 = 3;
pub const CANNOT_RECORD: i32 = 4;
pub const BAD_INPUT: i32 = 5;
pub const DIVERGED: i32 = 6;

/// Prints `uniplay: error: outer: cause: root cause` on stderr.
pub fn report(err: &(dyn std::error::Error + 'static)) {
    let mut line = format!("uniplay: error: {err}");
    let mut cur = err.source();
    while let Some(e) = cur {
        line.push_str(&format!(": {e}"));
        cur = e.source();
    }
    eprintln!("{line}");
}
