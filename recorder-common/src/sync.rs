//! The synchronisation functions recorded in multithreaded processes: the
//! C library's entry points whose order across threads decides the order
//! of critical sections, which threads that never contend leave no syscall
//! to show. The daemon puts a uprobe on each (the attach cookie is the
//! index here); replay stops threads at the same entries and lets them go
//! in the recorded order.
//!
//! Spinlocks are left out on purpose: a thread that finds one held spins
//! without a syscall or another entry to stop at, so a serial replay could
//! not let the holder run; they remain a limitation, as other lock-free
//! synchronisation does.

/// Function names, by op code (`SyncRec::op`). Invariant: append only;
/// traces store the index.
pub const SYNC_FUNCTIONS: [&str; 24] = [
    "pthread_mutex_lock",
    "pthread_mutex_trylock",
    "pthread_mutex_timedlock",
    "pthread_mutex_clocklock",
    "pthread_mutex_unlock",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "pthread_cond_clockwait",
    "pthread_cond_signal",
    "pthread_cond_broadcast",
    "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock",
    "pthread_rwlock_tryrdlock",
    "pthread_rwlock_trywrlock",
    "pthread_rwlock_timedrdlock",
    "pthread_rwlock_timedwrlock",
    "pthread_rwlock_clockrdlock",
    "pthread_rwlock_clockwrlock",
    "pthread_rwlock_unlock",
    "pthread_barrier_wait",
    "sem_wait",
    "sem_trywait",
    "sem_timedwait",
    "sem_post",
];

/// Ops that only release or signal (mutex_unlock, cond_signal,
/// cond_broadcast, rwlock_unlock, sem_post): their entry is all replay
/// needs. Every other one acquires something (a lock, a wakeup, a count),
/// and its return is recorded too: when the thread held what it acquired.
/// Invariant: bits of `SYNC_FUNCTIONS` indexes (checked by a test).
pub const SYNC_RELEASES: u32 = 1 << 4 | 1 << 8 | 1 << 9 | 1 << 18 | 1 << 23;

/// Whether op `op`'s returns are recorded (it acquires).
pub const fn sync_returns(op: u32) -> bool {
    (op as usize) < SYNC_FUNCTIONS.len() && SYNC_RELEASES & (1 << op) == 0
}

/// While a thread is inside a function whose return is probed, the kernel
/// has replaced its return address on the stack with that of its
/// trampoline (in the `[uprobes]` page, which replay does not have). The
/// entry program keeps the original here, by process and stack slot, until
/// the return; checkpoints store the original in its place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetSlot {
    pub tgid: u64,
    /// Address of the return address on the stack (rsp at entry).
    pub slot: u64,
}

const _: () = assert!(core::mem::size_of::<RetSlot>() == 16);

/// The name of op `op`, if it is one.
pub fn sync_name(op: u32) -> Option<&'static str> {
    SYNC_FUNCTIONS.get(op as usize).copied()
}

/// The op code of function `name`.
pub fn sync_op(name: &str) -> Option<u32> {
    SYNC_FUNCTIONS
        .iter()
        .position(|&n| n == name)
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_the_named_ones() {
        let releases: [&str; 5] = [
            "pthread_mutex_unlock",
            "pthread_cond_signal",
            "pthread_cond_broadcast",
            "pthread_rwlock_unlock",
            "sem_post",
        ];
        for (op, name) in SYNC_FUNCTIONS.iter().enumerate() {
            assert_eq!(sync_returns(op as u32), !releases.contains(name), "{name}");
        }
        assert!(!sync_returns(SYNC_FUNCTIONS.len() as u32));
    }
}
