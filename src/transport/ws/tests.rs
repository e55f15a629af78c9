//! The WebSocket client against tungstenite as the server (a real, independent peer), and
//! against hand-made bytes for what a well-behaved server never sends.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, Utf8Bytes};

use super::frames::{MAX_WRITE_FRAME, Parsed, WsIo, parse};
use super::upgrade;
use crate::proxy::testing::{Pieces, block_on};
use crate::transport::rung::Rung;

type Server = WebSocketStream<TcpStream>;

/// A tungstenite server on loopback running `serve` on the one client; the client, upgraded.
async fn pair<F, Fut>(serve: F) -> WsIo<TcpStream>
where
    F: FnOnce(Server) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(tokio_tungstenite::accept_async(tcp).await.unwrap()).await;
    });
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let rung = Rung::parse(&format!("wss://localhost:{port}/tunnel")).unwrap();
    upgrade(tcp, &rung).await.unwrap()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

#[tokio::test]
async fn bytes_travel_both_ways_pings_are_answered_and_close_is_eof() {
    // Not a multiple of 8: the last frame has a tail the masking does byte by byte.
    const LEN: usize = 700_003;
    let (pong_tx, pong_rx) = tokio::sync::oneshot::channel();
    let mut io = pair(|mut ws| async move {
        // Echo LEN bytes of binary messages (a ping first), then say bye and close.
        ws.send(Message::Ping("p1".into())).await.unwrap();
        let (mut echoed, mut pong) = (0, None);
        // The client reads the ping (and answers it) while it reads the echo.
        while echoed < LEN || pong.is_none() {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => {
                    assert!(b.len() <= MAX_WRITE_FRAME, "a frame of {} bytes", b.len());
                    echoed += b.len();
                    ws.send(Message::Binary(b)).await.unwrap();
                }
                Message::Pong(p) => pong = Some(p),
                other => panic!("unexpected {other:?}"),
            }
        }
        let _ = pong_tx.send(pong);
        ws.send(Message::Binary("bye".into())).await.unwrap();
        ws.close(None).await.unwrap();
        // tungstenite ends the stream once our Close is answered.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    let data = pattern(LEN, 7);
    io.write_all(&data).await.unwrap();
    io.flush().await.unwrap();
    let mut back = vec![0u8; LEN];
    io.read_exact(&mut back).await.unwrap();
    assert!(back == data, "the echo differs");
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye");
    assert_eq!(pong_rx.await.unwrap().as_deref(), Some(&b"p1"[..]));
}

#[tokio::test]
async fn a_frame_of_any_size_is_streamed_and_fragments_join_around_control_frames() {
    let big = pattern(5 << 20, 1);
    let sent = big.clone();
    let mut io = pair(|mut ws| async move {
        ws.send(Message::Binary(sent.into())).await.unwrap();
        // One message in three frames, a ping and a pong between them.
        let frames = [
            Frame::message(&b"one "[..], OpCode::Data(Data::Binary), false),
            Frame::ping(&b"x"[..]),
            Frame::message(&b"two "[..], OpCode::Data(Data::Continue), false),
            Frame::pong(&b"y"[..]),
            Frame::message(&b"three"[..], OpCode::Data(Data::Continue), true),
        ];
        for f in frames {
            ws.send(Message::Frame(f)).await.unwrap();
        }
        ws.send(Message::Text(Utf8Bytes::from_static("then text")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut got = vec![0u8; big.len()];
    io.read_exact(&mut got).await.unwrap();
    assert!(got == big, "the 5 MiB frame differs");
    let mut joined = [0u8; 13];
    io.read_exact(&mut joined).await.unwrap();
    assert_eq!(&joined, b"one two three");
    let e = io.read(&mut joined).await.unwrap_err();
    assert!(e.to_string().contains("text frame"), "{e}");
}

/// The next frame our client wrote: (opcode, unmasked payload); panics on an unmasked one.
async fn client_frame(peer: &mut DuplexStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    peer.read_exact(&mut h).await.unwrap();
    assert!(
        h[0] & 0x80 != 0 && h[1] & 0x80 != 0,
        "FIN and MASK set: {h:?}"
    );
    let len = match h[1] & 0x7f {
        126 => usize::from(peer.read_u16().await.unwrap()),
        127 => peer.read_u64().await.unwrap() as usize,
        n => usize::from(n),
    };
    let mut key = [0u8; 4];
    peer.read_exact(&mut key).await.unwrap();
    let mut payload = vec![0u8; len];
    peer.read_exact(&mut payload).await.unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    (h[0] & 0x0f, payload)
}

#[tokio::test]
async fn an_idle_reader_answers_pings_and_a_close_and_shutdown_sends_close() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut io = WsIo::new(ours);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        let n = io.read(&mut buf).await.unwrap();
        (n, io)
    });
    peer.write_all(&[0x89, 2, b'h', b'i']).await.unwrap();
    assert_eq!(client_frame(&mut peer).await, (0xA, b"hi".to_vec()));
    peer.write_all(&[0x88, 2, 0x03, 0xE9]).await.unwrap();
    assert_eq!(client_frame(&mut peer).await, (0x8, vec![0x03, 0xE9]));
    let (n, mut io) = reader.await.unwrap();
    assert_eq!(n, 0, "Close is the end of the stream");
    // After its Close is answered, nothing more may be written.
    assert!(io.write_all(b"late").await.is_err());

    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut io = WsIo::new(ours);
    io.write_all(b"last words").await.unwrap();
    io.shutdown().await.unwrap();
    assert_eq!(client_frame(&mut peer).await, (0x2, b"last words".to_vec()));
    assert_eq!(
        client_frame(&mut peer).await,
        (0x8, 1000u16.to_be_bytes().to_vec())
    );
    assert_eq!(peer.read(&mut [0u8; 1]).await.unwrap(), 0);
}

#[tokio::test]
async fn what_no_terminator_carrying_ssh_sends_ends_the_stream_with_a_reason() {
    let cases: [(&[u8], &str); 8] = [
        (&[0x82, 0x82, 1, 2, 3, 4, 5, 6], "masked"),
        (&[0xC2, 0x00], "reserved bits"),
        (&[0x81, 0x01, b'a'], "text frame"),
        (&[0x80, 0x01, b'a'], "no message to continue"),
        (
            &[0x02, 0x01, b'a', 0x82, 0x00],
            "began before the previous one ended",
        ),
        (&[0x09, 0x00], "control frame is fragmented"),
        (&[0x89, 0x7E, 0x00, 0x7E], "longer than 125"),
        (&[0x83, 0x00], "reserved opcode 0x3"),
    ];
    for (bytes, reason) in cases {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        peer.write_all(bytes).await.unwrap();
        let mut io = WsIo::new(ours);
        let mut buf = [0u8; 64];
        let e = loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("{bytes:?}: EOF instead of an error"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(e.to_string().contains(reason), "{bytes:?}: {e}");
    }
    // The stream ending inside a frame is an error; between frames it is EOF.
    let (ours, mut peer) = tokio::io::duplex(64);
    peer.write_all(&[0x82, 0x05, b'a']).await.unwrap();
    drop(peer);
    let mut rest = Vec::new();
    let e = WsIo::new(ours).read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
}

/// A server's frame: FIN, opcode, the shortest length form, no mask.
fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

proptest! {
    #[test]
    fn the_parser_takes_any_bytes_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(Parsed::Need(n)) = parse(&bytes) {
            prop_assert!(n > bytes.len() && n <= 14 + 125, "Need({n}) for {} bytes", bytes.len());
        }
    }

    /// Messages cut into frames anywhere, with pings between frames, delivered in pieces of any
    /// size: the reader returns exactly the concatenated payloads, then EOF at the Close.
    #[test]
    fn payloads_come_out_whole_and_in_order_however_frames_and_reads_are_cut(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..70_000), 1..4),
        cuts in prop::collection::vec(0usize..70_000, 0..6),
        pieces in prop::collection::vec(1usize..5_000, 0..40),
        ping_every in 1usize..4,
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let mut frames = 0;
        for m in &messages {
            expected.extend_from_slice(m);
            let mut ends: Vec<usize> = cuts
                .iter()
                .map(|c| c % (m.len() + 1))
                .filter(|&p| p > 0 && p < m.len())
                .collect();
            ends.sort_unstable();
            ends.dedup();
            ends.push(m.len());
            let mut start = 0;
            for (i, end) in ends.into_iter().enumerate() {
                let opcode = if i == 0 { 0x2 } else { 0x0 };
                wire.extend(server_frame(end == m.len(), opcode, &m[start..end]));
                frames += 1;
                if frames % ping_every == 0 {
                    wire.extend(server_frame(true, 0x9, b"ping"));
                }
                start = end;
            }
        }
        wire.extend(server_frame(true, 0x8, &1000u16.to_be_bytes()));
        let got = block_on(async {
            let mut out = Vec::new();
            WsIo::new(Pieces::new(wire, pieces)).read_to_end(&mut out).await.map(|_| out)
        });
        prop_assert!(got.as_ref().is_ok_and(|g| *g == expected), "{:?}", got.map(|g| g.len()));
    }
}
