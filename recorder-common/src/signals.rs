//! Signal names by number (x86-64 Linux), shared by the recorder's messages
//! and `uniplay inspect`.

/// `NAMES[n]` is signal n's name; 0 has none.
pub const SIGNAL_NAMES: [&str; 32] = [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The name of a classic signal (1..=31), if it has one.
pub fn signal_name(sig: u32) -> Option<&'static str> {
    SIGNAL_NAMES
        .get(sig as usize)
        .copied()
        .filter(|n| !n.is_empty())
}
