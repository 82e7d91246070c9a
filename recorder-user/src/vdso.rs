//! The vDSO: finding its time functions and making them visible.
//!
//! `clock_gettime`, `gettimeofday`, `time` and `getcpu` normally run in the
//! vDSO without entering the kernel, so no tracepoint sees them and replay
//! could not reproduce their results. The recorder patches each entry point
//! to `mov $nr, %eax; syscall; ret`, turning them into real, recorded
//! syscalls. (`rdtsc` stays invisible: see the README's limitations.)

use object::{Object, ObjectSymbol};

/// vDSO entry points and the syscall each becomes.
pub const PATCHES: [(&str, u32); 5] = [
    ("__vdso_clock_gettime", 228),
    ("__vdso_gettimeofday", 96),
    ("__vdso_time", 201),
    ("__vdso_getcpu", 309),
    ("__vdso_clock_getres", 229),
];

/// `mov $nr, %eax; syscall; ret`.
pub fn stub(nr: u32) -> [u8; 8] {
    let n = nr.to_le_bytes();
    [0xb8, n[0], n[1], n[2], n[3], 0x0f, 0x05, 0xc3]
}

/// Offsets (from the vDSO's start) of the entry points in `PATCHES` found in
/// this image, with the syscall number each should make.
pub fn entry_points(image: &[u8]) -> Vec<(u64, u32)> {
    let Ok(file) = object::File::parse(image) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for sym in file.dynamic_symbols() {
        let Ok(name) = sym.name() else { continue };
        if let Some(&(_, nr)) = PATCHES.iter().find(|(n, _)| *n == name) {
            found.push((sym.address(), nr));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// What injected syscalls run: `syscall`, then — only ever reached by a
/// process that escapes the supervisor right after an injected fork, i.e.
/// a snapshot child whose recorder died — `exit(0)`. The parent of an
/// injection is always stopped after its `syscall` and never runs on.
pub const INJECTION_STUB: [u8; 12] = [
    0x0f, 0x05, // syscall
    0xb8, 0x3c, 0x00, 0x00, 0x00, // mov $60, %eax (exit)
    0x31, 0xff, // xor %edi, %edi
    0x0f, 0x05, // syscall
    0x0f, // (padding)
];

/// Where [`INJECTION_STUB`] can go: zero padding after the image's last
/// byte of code and data, 16-byte aligned; or where it already is (an
/// image patched before, inherited by a forked child: a second stub would
/// be a change replay does not make).
pub fn injection_site(image: &[u8]) -> Option<u64> {
    let last = image.iter().rposition(|&b| b != 0)?;
    if let Some(there) = (last + 1).checked_sub(INJECTION_STUB.len()) {
        if there % 16 == 0 && image[there..=last] == INJECTION_STUB {
            return Some(there as u64);
        }
    }
    let site = (last + 1 + 15) & !15;
    (site + 16 <= image.len()).then_some(site as u64)
}

/// Offset of a `syscall` instruction (0f 05) in the image, to point injected
/// syscalls at.
pub fn syscall_insn(image: &[u8]) -> Option<u64> {
    image
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|p| p as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdso_own_image() {
        // This process's own vDSO, read from memory: the symbols must be found.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .expect("a vDSO");
        let (range, _) = line.split_once(' ').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        // SAFETY: the vDSO mapping is readable for the life of the process.
        let image = unsafe { std::slice::from_raw_parts(a as *const u8, (b - a) as usize) };
        let eps = entry_points(image);
        assert!(
            eps.iter().any(|&(_, nr)| nr == 228),
            "no clock_gettime in {eps:?}"
        );
        assert!(syscall_insn(image).is_some());
        let site = injection_site(image).expect("padding at the end of the vDSO") as usize;
        assert!(image[site..site + 16].iter().all(|&b| b == 0));
        assert_eq!(stub(228), [0xb8, 228, 0, 0, 0, 0x0f, 0x05, 0xc3]);
    }

    /// Patching an image twice (a forked child's inherited vDSO) puts the
    /// stub where it is, not a second one after it.
    #[test]
    fn injection_site_reuses_the_stub() {
        let mut image = vec![0u8; 64];
        image[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        let site = injection_site(&image).unwrap() as usize;
        assert_eq!(site, 16);
        image[site..site + INJECTION_STUB.len()].copy_from_slice(&INJECTION_STUB);
        assert_eq!(injection_site(&image), Some(16));
        // Padding too short for a stub: none.
        assert_eq!(injection_site(&image[..40]), Some(16));
        assert_eq!(injection_site(&[1u8; 40]), None);
    }
}
