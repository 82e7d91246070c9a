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
