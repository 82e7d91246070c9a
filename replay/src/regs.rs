//! `user_regs_struct` as the checkpoint's 27 words, in the kernel's order.

use crate::sys::Regs;

/// Names of the 27 words of a checkpoint's `ThreadState::regs`.
pub const REG_NAMES: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];

pub fn to_words(r: &Regs) -> [u64; 27] {
    [
        r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx, r.rdx,
        r.rsi, r.rdi, r.orig_rax, r.rip, r.cs, r.eflags, r.rsp, r.ss, r.fs_base, r.gs_base, r.ds,
        r.es, r.fs, r.gs,
    ]
}

/// `None` unless `w` has exactly 27 words.
pub fn from_words(w: &[u64]) -> Option<Regs> {
    let w: &[u64; 27] = w.try_into().ok()?;
    Some(Regs {
        r15: w[0],
        r14: w[1],
        r13: w[2],
        r12: w[3],
        rbp: w[4],
        rbx: w[5],
        r11: w[6],
        r10: w[7],
        r9: w[8],
        r8: w[9],
        rax: w[10],
        rcx: w[11],
        rdx: w[12],
        rsi: w[13],
        rdi: w[14],
        orig_rax: w[15],
        rip: w[16],
        cs: w[17],
        eflags: w[18],
        rsp: w[19],
        ss: w[20],
        fs_base: w[21],
        gs_base: w[22],
        ds: w[23],
        es: w[24],
        fs: w[25],
        gs: w[26],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_round_trip() {
        let words: Vec<u64> = (1..=27).collect();
        let r = from_words(&words).unwrap();
        assert_eq!(r.rax, 11);
        assert_eq!(r.rip, 17);
        assert_eq!(r.gs, 27);
        assert_eq!(to_words(&r).to_vec(), words);
        assert_eq!(REG_NAMES[10], "rax");
        assert!(from_words(&words[..26]).is_none());
    }
}
