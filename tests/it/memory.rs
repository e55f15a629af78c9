//! `agent::memory`: freed heap goes back to the kernel even when live allocations are
//! scattered through it, which is how the heap looks after a crowd of connections closed while
//! the session and other connections kept theirs. (glibc alone keeps such memory resident.)
//!
//! It measures its process's RSS, so nothing may run beside it: it runs itself again in a child
//! process of the test binary (`support::run_alone`).

use crate::support;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn freed_buffers_between_live_allocations_are_returned_to_the_kernel() {
    if !support::run_alone(
        "memory::freed_buffers_between_live_allocations_are_returned_to_the_kernel",
        &[],
    ) {
        return;
    }
    agent::memory::tune();
    const CHUNK: usize = 32 * 1024; // the size of a channel data packet
    const CHUNKS: usize = 2048; // 64 MiB
    let baseline = rss_kib();
    let mut chunks = Vec::with_capacity(CHUNKS);
    let mut pins = Vec::with_capacity(CHUNKS);
    for i in 0..CHUNKS {
        chunks.push(vec![i as u8 | 1; CHUNK]);
        // Small, long-lived state allocated between the buffers (per-connection bookkeeping).
        pins.push(Box::new([i as u64; 8]));
    }
    let peak = rss_kib();
    assert!(
        peak > baseline + 48 * 1024,
        "the buffers were not resident: {baseline} -> {peak} KiB"
    );
    drop(chunks);
    let before_release = rss_kib();
    agent::memory::release_free();
    let after = rss_kib();
    eprintln!(
        "RSS KiB: baseline {baseline}, peak {peak}, freed {before_release}, released {after}"
    );
    assert!(
        after < baseline + 16 * 1024,
        "freed memory stayed resident: baseline {baseline}, peak {peak}, after release {after} KiB"
    );
    // The pins are still intact.
    assert!(pins.iter().enumerate().all(|(i, p)| p[7] == i as u64));
}
