//! What the agent asks the kernel about its own process: the user it runs as, and that no other
//! process may look inside it.
//!
//! `agent run` holds the customer's private key in memory for as long as it runs. A process is
//! "dumpable" by default: any other process of the same user may ptrace it (read its memory, so
//! the key), and a crash writes a core file with the whole heap wherever `core_pattern` says.
//! [`set_non_dumpable`] turns both off: ptrace then needs CAP_SYS_PTRACE, no core file is
//! written, and the files in /proc/PID belong to root. The flag holds until the process
//! ends (the agent never executes another program).
//!
//! [`private`]: a file only the agent may read (the identity key, an HTTP forward's secrets),
//! its owner-and-mode rule and the one way it is read.
//!
//! Every call goes through rustix's safe wrappers: no `unsafe` here.

pub mod dir;
pub mod private;

use std::io;

/// The real user id of this process: the "agent's own user" of OpenSSH's key-permission rule
/// ([`private`]).
pub fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Raises this process's soft limit of open files (RLIMIT_NOFILE) to its hard limit: systemd
/// and most shells start services at 1024, while every vendor connection holds a descriptor.
/// Returns the soft limit before and after (`u64::MAX`: unlimited).
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current == limit.maximum {
        return Ok((before, before));
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
    Ok((before, limit.maximum.unwrap_or(u64::MAX)))
}

/// The soft limit of open files now (`u64::MAX`: unlimited).
pub fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Makes this process non-dumpable: no ptrace by other unprivileged processes, no core file.
pub fn set_non_dumpable() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, set_dumpable_behavior};
        // prctl(PR_SET_DUMPABLE, SUID_DUMP_DISABLE)
        set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "PR_SET_DUMPABLE is Linux-only",
    ))
}

/// Whether this process is dumpable (PR_GET_DUMPABLE), to check [`set_non_dumpable`].
pub fn is_dumpable() -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, dumpable_behavior};
        // prctl(PR_GET_DUMPABLE): 0 is not dumpable; 1 and 2 (core files readable by root only)
        // are both dumpable.
        let flag = dumpable_behavior().map_err(io::Error::from)?;
        Ok(flag != DumpableBehavior::NotDumpable)
    }
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "PR_GET_DUMPABLE is Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process that this test starts: the flag is per process, and the test
    /// runner's own process must stay as it is.
    const CHILD: &str = "AGENT_SYS_TEST_NON_DUMPABLE_CHILD";
    const NAME: &str = "sys::tests::set_non_dumpable_turns_ptrace_and_core_dumps_off";

    #[test]
    fn set_non_dumpable_turns_ptrace_and_core_dumps_off() {
        if std::env::var_os(CHILD).is_some() {
            assert!(is_dumpable().unwrap(), "a fresh process is dumpable");
            set_non_dumpable().unwrap();
            assert!(
                !is_dumpable().unwrap(),
                "PR_GET_DUMPABLE after PR_SET_DUMPABLE 0"
            );
            // And as other processes see it: the files in /proc/PID are handed to root.
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata("/proc/self/status").unwrap().uid(), 0);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child test failed or did not run:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn real_uid_is_the_owner_of_what_this_process_creates() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), real_uid());
    }
}
