//! [`WsIo`]: a WebSocket as a byte stream (RFC 6455 §5), client side.
//!
//! Reading: the concatenated payloads of binary messages (a binary frame and its continuation
//! frames), read straight into the caller's buffer; pings answered with pongs, pongs ignored,
//! a Close frame (answered with a Close) or the end of the stream between frames is EOF. A text
//! frame, a masked frame, reserved bits or opcodes, or a fragmented or oversized control frame
//! end the stream with an error: none of them comes from a terminator carrying SSH.
//!
//! Writing: each write becomes one masked binary frame of at most [`MAX_WRITE_FRAME`] bytes,
//! built in one reused buffer (copied and masked in one pass). Pongs and the Close reply go out
//! between frames, never inside one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest payload one write puts in a frame (russh hands over all its pending output at once,
/// often hundreds of KiB). Large frames are cheaper for the terminator and the sshd behind it
/// (measured with examples/wss_terminator.rs: 64 KiB frames cost them 20% more CPU per GB than
/// 256 KiB), but terminators commonly forward a frame only once it is whole, so a frame is also
/// latency: 256 KiB is half a millisecond at 4 Gbit/s. The frame buffer is allocated once per
/// session and reused.
pub(super) const MAX_WRITE_FRAME: usize = 256 * 1024;

/// A frame header from a server is at most 10 bytes (no mask key; 14 with one, ours).
const MAX_HEADER: usize = 14;

/// A control frame's payload is at most 125 bytes (§5.5).
const MAX_CONTROL: usize = 125;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What [`parse`] makes of the bytes at the start of a frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// More bytes are needed: this many in all (header, and a control frame's payload).
    Need(usize),
    /// A binary or continuation frame; `len` bytes of payload follow its header (which the
    /// reader has read exactly, so knows the length of).
    Data {
        fin: bool,
        continuation: bool,
        len: u64,
    },
    /// A whole control frame: a `header`-byte header and `len` bytes of payload.
    Control {
        opcode: u8,
        header: usize,
        len: usize,
    },
}

/// Parses the frame that starts `bytes`, sent by a server (so unmasked, §5.1). Never asks for
/// more than [`MAX_HEADER`] + [`MAX_CONTROL`] bytes.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let [b0, b1, ..] = *bytes else {
        return Ok(Parsed::Need(2));
    };
    if b0 & 0x70 != 0 {
        return Err("a WebSocket frame has reserved bits set (no extension was agreed)".into());
    }
    if b1 & 0x80 != 0 {
        return Err(
            "the terminator sent a masked WebSocket frame (RFC 6455 §5.1: a server's \
                    frames are never masked)"
                .into(),
        );
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (header, len) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(Parsed::Need(4)),
        },
        127 => match bytes.get(2..10) {
            Some(l) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(l);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err("a WebSocket frame length has its top bit set".into());
                }
                (10, len)
            }
            None => return Ok(Parsed::Need(10)),
        },
        short => (2, u64::from(short)),
    };
    match opcode {
        OP_BINARY | OP_CONTINUATION => Ok(Parsed::Data {
            fin,
            continuation: opcode == OP_CONTINUATION,
            len,
        }),
        OP_TEXT => {
            Err("the terminator sent a WebSocket text frame; SSH travels in binary frames".into())
        }
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len > MAX_CONTROL as u64 {
                return Err(
                    "a WebSocket control frame is fragmented or longer than 125 bytes \
                            (RFC 6455 §5.5)"
                        .into(),
                );
            }
            let len = len as usize;
            if bytes.len() < header + len {
                Ok(Parsed::Need(header + len))
            } else {
                Ok(Parsed::Control {
                    opcode,
                    header,
                    len,
                })
            }
        }
        other => Err(format!(
            "a WebSocket frame has the reserved opcode {other:#x}"
        )),
    }
}

/// A WebSocket, once upgraded, as a byte stream.
pub struct WsIo<S> {
    inner: S,
    /// The frame header (or whole control frame) being read: `head[..head_len]`.
    head: [u8; MAX_HEADER + MAX_CONTROL],
    head_len: usize,
    /// Payload bytes of the current data frame still to be read.
    payload_left: u64,
    /// A binary message is open (its last frame had FIN clear): continuation frames follow.
    in_message: bool,
    /// The terminator sent Close, or its stream ended between frames.
    eof: bool,
    /// Frames being written: `wbuf[wpos..]` has not been taken by `inner` yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// The payload of the latest ping not answered yet (§5.5.3: the latest is enough).
    pong: Option<Vec<u8>>,
    /// The status code to echo in our answer to the terminator's Close.
    close_due: Option<Vec<u8>>,
    /// Our Close is written or queued: no frame may follow it.
    write_closed: bool,
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<S> WsIo<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            head: [0; MAX_HEADER + MAX_CONTROL],
            head_len: 0,
            payload_left: 0,
            in_message: false,
            eof: false,
            wbuf: Vec::new(),
            wpos: 0,
            pong: None,
            close_due: None,
            write_closed: false,
        }
    }

    /// Appends one masked frame (§5.3: a fresh random key per frame) to the write buffer.
    fn push_frame(&mut self, opcode: u8, payload: &[u8]) {
        let key: [u8; 4] = rand::random();
        let len = payload.len();
        self.wbuf.reserve(MAX_HEADER + len);
        self.wbuf.push(0x80 | opcode);
        match len {
            0..=125 => self.wbuf.push(0x80 | len as u8),
            126..=0xffff => {
                self.wbuf.push(0x80 | 126);
                self.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.wbuf.push(0x80 | 127);
                self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.wbuf.extend_from_slice(&key);
        extend_masked(&mut self.wbuf, payload, key);
    }
}

/// `out.extend(payload XOR key)`, eight bytes at a time (one pass; the compiler vectorizes it).
fn extend_masked(out: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let key8 = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact(8);
    out.extend((&mut words).flat_map(|w| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        (u64::from_ne_bytes(word) ^ key8).to_ne_bytes()
    }));
    // The tail starts at a multiple of 8, so at key byte 0.
    let tail = words.remainder().iter().zip(key.iter().cycle());
    out.extend(tail.map(|(byte, k)| byte ^ k));
}

impl<S: AsyncWrite + Unpin> WsIo<S> {
    /// Writes out the buffered frames, then any pong or Close reply that waited for them.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.wpos < self.wbuf.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wpos += n;
            }
            self.wbuf.clear();
            self.wpos = 0;
            if let Some(payload) = self.pong.take() {
                if !self.write_closed {
                    self.push_frame(OP_PONG, &payload);
                }
            } else if let Some(code) = self.close_due.take() {
                self.push_frame(OP_CLOSE, &code);
                self.write_closed = true;
            } else {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        // Pongs and the Close reply go out from here too: an idle session only reads.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if me.payload_left > 0 {
                // Payload goes straight into the caller's buffer, never past the frame's end.
                let want = usize::try_from(me.payload_left).unwrap_or(usize::MAX);
                let want = want.min(buf.remaining());
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
                ready!(Pin::new(&mut me.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the terminator closed the connection in the middle of a WebSocket frame",
                    )));
                }
                buf.advance(n);
                me.payload_left -= n as u64;
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            match parse(&me.head[..me.head_len]).map_err(|e| broken(&e))? {
                Parsed::Need(total) => {
                    // Exactly what the header needs, so the payload after it is read in place.
                    let mut part = ReadBuf::new(&mut me.head[me.head_len..total]);
                    ready!(Pin::new(&mut me.inner).poll_read(cx, &mut part))?;
                    let n = part.filled().len();
                    if n == 0 && me.head_len == 0 && !me.in_message {
                        me.eof = true;
                    } else if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the terminator closed the connection in the middle of a WebSocket \
                             message",
                        )));
                    }
                    me.head_len += n;
                }
                Parsed::Data {
                    fin,
                    continuation,
                    len,
                } => {
                    if continuation != me.in_message {
                        return Poll::Ready(Err(broken(if continuation {
                            "a WebSocket continuation frame came with no message to continue"
                        } else {
                            "a WebSocket message began before the previous one ended"
                        })));
                    }
                    me.in_message = !fin;
                    me.payload_left = len;
                    me.head_len = 0;
                }
                Parsed::Control {
                    opcode,
                    header,
                    len,
                } => {
                    let payload = &me.head[header..header + len];
                    match opcode {
                        OP_PING => me.pong = Some(payload.to_vec()),
                        OP_CLOSE => {
                            me.eof = true;
                            if !me.write_closed {
                                // Echo the status code (§5.5.1); a 1-byte payload is malformed.
                                me.close_due = Some(payload.get(..2).unwrap_or(&[]).to_vec());
                            }
                        }
                        _ => {}
                    }
                    me.head_len = 0;
                    if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(me.poll_drain(cx))?;
        if me.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket is closed",
            )));
        }
        let n = data.len().min(MAX_WRITE_FRAME);
        me.push_frame(OP_BINARY, &data[..n]);
        // Start sending now; what `inner` does not take yet goes with the next write or flush.
        if let Poll::Ready(Err(e)) = me.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    /// Sends Close (1000, normal closure) after what is buffered, then shuts `inner` down.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        if !me.write_closed {
            me.push_frame(OP_CLOSE, &1000u16.to_be_bytes());
            me.write_closed = true;
            ready!(me.poll_drain(cx))?;
        }
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}
