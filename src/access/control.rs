//! The control socket: a Unix socket in the state folder (0700), itself 0600, answering only
//! the agent's own user (and root), never on a TCP port and never through the vendor's tunnel.
//! The caller's uid comes from the kernel (SO_PEERCRED) and is recorded with each change.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{info, warn};

use super::controller::Command;
use super::protocol::{MAX_LINE, Request, Response};

/// The socket's name in the state folder.
pub const SOCKET: &str = "control.sock";
/// A caller has this long to send its request, and the agent to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once; more are closed unanswered.
const MAX_CLIENTS: usize = 8;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Binds the socket, replacing a stale one left by an agent that died; refuses when another
/// agent answers on it (two agents sharing one state folder would undo each other's grants).
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another agent answers on {}: give each agent its own state_dir",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control connections until the task is dropped.
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    let own_uid = crate::sys::real_uid();
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
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
            if request != Request::Status {
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
