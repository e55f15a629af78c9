//! Wakes the controller when something changes in the state folder (inotify), so a pause
//! written by the command line or by another agent applies at once. Only a hint: the
//! controller compares the files' fingerprints before reading, and re-reads every
//! [`REREAD`](super::controller::REREAD) anyway, for volumes whose changes the kernel does not
//! report (NFS and other volumes shared across hosts) or when inotify is unavailable.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;
use tracing::debug;

pub struct Watch {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Watch {
    /// A watch on `folder`; without one (or if inotify fails) it never fires.
    pub fn new(folder: Option<&Path>) -> Self {
        let fd = folder.and_then(|folder| {
            let watch = || -> std::io::Result<AsyncFd<OwnedFd>> {
                let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
                let events = WatchFlags::CLOSE_WRITE
                    | WatchFlags::MOVED_TO
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::CREATE
                    | WatchFlags::DELETE
                    | WatchFlags::ATTRIB
                    | WatchFlags::DELETE_SELF
                    | WatchFlags::MOVE_SELF;
                inotify::add_watch(&fd, folder, events | WatchFlags::ONLYDIR)?;
                // Deprecated for fds someone else may close while registered; this one is owned
                // here alone and closed only when the `AsyncFd` drops (`register` is `unsafe`).
                #[allow(deprecated)]
                AsyncFd::new(fd)
            };
            watch()
                .inspect_err(|e| {
                    debug!(error = %e, "no file watch on the state folder; re-reading it periodically")
                })
                .ok()
        });
        Self { fd }
    }

    /// Resolves when the folder changed (never, without a watch). Cancel-safe.
    pub async fn changed(&mut self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        if !events(fd).await {
            // Broken: from now on the periodic re-read alone (this call counts as a change).
            self.fd = None;
        }
    }
}

/// Waits for events and drains them: true once some were read, false if the watch broke.
async fn events(fd: &AsyncFd<OwnedFd>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return false;
        };
        let mut any = false;
        loop {
            match rustix::io::read(fd.get_ref(), &mut buf) {
                Ok(n) if n > 0 => any = true,
                Err(rustix::io::Errno::AGAIN) => {
                    ready.clear_ready();
                    break;
                }
                Err(rustix::io::Errno::INTR) => {}
                _ => return false,
            }
        }
        if any {
            return true;
        }
    }
}
