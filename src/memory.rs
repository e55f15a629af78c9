//! Keeps the allocator from holding memory the agent no longer uses.
//!
//! glibc's malloc keeps freed heap for reuse: after 10,000 connections close, the agent would
//! stay at its peak resident size for months. Its default trim threshold (128 KiB, raised on the
//! fly) has the opposite problem on the data path: every burst of packets frees a few hundred
//! KiB at the top of the heap, glibc hands it back to the kernel, and the next burst faults the
//! same pages in again (~5% of the agent's CPU toward a busy target, measured with perf).
//! So: a fixed, larger trim threshold while running, and an explicit trim of everything free
//! shortly after connections close, which returns what a crowd of connections left behind.
//!
//! Only this module uses `unsafe`: two calls into glibc that take and return plain integers.
//! rustix, through which `sys` makes its calls safely, has no equivalent: it wraps system
//! calls, and these are the C library's allocator, not the kernel's.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Free memory glibc may keep at the top of the heap between trims (it then stops adjusting the
/// threshold by itself).
const TRIM_THRESHOLD: i32 = 4 << 20;

/// How often [`release_after_closes`] looks for closed connections.
const RELEASE_CHECK: Duration = Duration::from_secs(2);

/// Forwarded connections closed since the process started.
static CONNECTIONS_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Records that a forwarded connection ended and its buffers were freed.
pub fn note_connection_closed() {
    CONNECTIONS_CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// Sets the allocator's trim threshold; call once at startup.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes only allocator parameters; any value is
    // accepted or rejected by glibc (it returns 0 on rejection, which leaves the default).
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns free heap memory (top of every arena and whole free pages inside) to the kernel.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a pad size and only releases memory that malloc holds as free;
    // it is documented as safe to call at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free`] within [`RELEASE_CHECK`] of connections closing, forever (spawn it).
/// A quiet agent is never woken for nothing but this check, and a trim of a small heap costs
/// microseconds.
pub async fn release_after_closes() {
    let mut tick = tokio::time::interval(RELEASE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = 0;
    loop {
        tick.tick().await;
        let closed = CONNECTIONS_CLOSED.load(Ordering::Relaxed);
        if closed != seen {
            seen = closed;
            release_free();
        }
    }
}
