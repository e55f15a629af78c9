//! The control socket: one Unix socket per agent in the shared state folder (0700), itself
//! 0600, answering only the agent's own user (and root), never on a TCP port and never through
//! the vendor's tunnel. The caller's uid comes from the kernel (SO_PEERCRED) and is recorded
//! with each change. It is only the fast path: the command line writes the state itself and
//! then asks every agent answering in the folder to re-read it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{info, warn};

use super::controller::Command;
use super::protocol::{MAX_LINE, Request, Response};
use super::store::Store;

/// Every agent's socket in the state folder is named `control-HOST-PID-RANDOM.sock` (HOST: a
/// hash of the host name): the agents of a site share the folder, each answers on a socket of its own.
pub const PREFIX: &str = "control-";
pub const SUFFIX: &str = ".sock";
/// The one socket of agents before the state was shared; removed when nothing answers on it.
const LEGACY: &str = "control.sock";
/// A caller has this long to send its request, and the agent to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once; more are closed unanswered.
const MAX_CLIENTS: usize = 8;

/// This host's part of the socket names: a short hash of the host name, so an agent removes
/// only stale sockets of its own host (on a volume shared across hosts, another host's socket
/// refuses connections from here although its agent runs).
pub fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    crate::audit::sha256_hex(host.trim().as_bytes())[..8].to_string()
}

/// A socket name of this process in the state folder, new on every call: the host and the
/// PID alone can repeat (containers sharing the host's name, each agent PID 1, or tests running
/// several agents in one process).
pub fn own_socket_name() -> String {
    let pid = std::process::id();
    let unique = rand::random::<u32>() & 0xff_ffff;
    format!("{PREFIX}{}-{pid}-{unique:06x}{SUFFIX}", host_tag())
}

/// Binds this agent's socket in the state folder (0600), first removing sockets of this host
/// that no process answers on any more (agents that died). Blocking: run it off the runtime.
pub fn bind(store: &Store) -> io::Result<(std::os::unix::net::UnixListener, String)> {
    let folder = store.folder();
    let name = own_socket_name();
    let mine = format!("{PREFIX}{}-", host_tag());
    let mut stale = folder.names(&mine, SUFFIX)?;
    stale.push(LEGACY.to_string());
    for old in stale {
        let refused = folder.is_socket(&old)
            && std::os::unix::net::UnixStream::connect(folder.path().join(&old))
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
        if refused {
            let _ = folder.remove(&old);
        }
    }
    let path = folder.path().join(&name);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    // The folder is the agent's own (0700): nobody can swap the name meanwhile.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok((listener, name))
}

/// Serves control connections until the task is dropped.
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    let own_uid = crate::sys::real_uid();
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, typically: said once a minute, not on every retry.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    warn!(error = %e, "control socket: cannot accept a connection; commands still reach the agent through the state on disk");
                    warned = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_one(stream, own_uid, commands).await;
        });
    }
}

async fn serve_one(stream: UnixStream, own_uid: u32, commands: mpsc::Sender<Command>) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!(error = %e, "control socket: cannot tell who connected; refused");
            return;
        }
    };
    let (rd, mut wr) = stream.into_split();
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(rd)).await;
    if uid != own_uid && uid != 0 {
        // Answered after reading the request, so the caller sees why rather than a broken pipe.
        warn!(
            uid,
            "control socket: refused a caller that is not the agent's user"
        );
        let answer = Response::error(format!(
            "refused: uid {uid} is not the agent's user (uid {own_uid}); run the command as that user"
        ));
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, write(&mut wr, &answer)).await;
        return;
    }
    let answer = match request {
        Err(_) => Response::error("no request within 5 s"),
        Ok(Err(e)) => Response::error(e),
        Ok(Ok(request)) => {
            if !matches!(request, Request::Status | Request::Refresh) {
                info!(uid, op = request.op(), "control socket: request");
            }
            let (reply, answer) = oneshot::channel();
            let sent = commands.send(Command {
                request,
                uid,
                reply,
            });
            match tokio::time::timeout(REQUEST_TIMEOUT, async {
                sent.await.ok()?;
                answer.await.ok()
            })
            .await
            {
                Ok(Some(a)) => a,
                _ => Response::error("the agent did not answer in time"),
            }
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, write(&mut wr, &answer)).await;
}

async fn read_request(rd: tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(rd).take(MAX_LINE as u64 + 1);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.len() > MAX_LINE {
        return Err(format!("request longer than {MAX_LINE} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("not a request this agent understands: {e}"))
}

async fn write(wr: &mut tokio::net::unix::OwnedWriteHalf, answer: &Response) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(answer).map_err(io::Error::other)?;
    bytes.push(b'\n');
    wr.write_all(&bytes).await?;
    wr.shutdown().await
}
