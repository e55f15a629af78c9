//! The pump against a fake channel sink and a real TCP target on 127.0.0.1: half-close both
//! ways, who ended the connection, stops from outside, and the byte budget.

use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, UnboundedSender};

use super::*;
use crate::tunnel::budget::{Overflow, TotalBudget};
use crate::tunnel::metrics::Metrics;

/// What the pump did toward the vendor, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Data(Vec<u8>),
    Eof,
    Close,
}

#[derive(Default)]
struct FakeSink {
    sent: Mutex<Vec<Sent>>,
    consumed: AtomicU64,
    /// The channel is gone: sends fail.
    gone: std::sync::atomic::AtomicBool,
}

impl FakeSink {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
    fn data(&self) -> Vec<u8> {
        self.sent()
            .into_iter()
            .filter_map(|s| match s {
                Sent::Data(d) => Some(d),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl ChannelSink for FakeSink {
    async fn send(&self, data: Bytes) -> Result<(), ()> {
        if self.gone.load(Ordering::SeqCst) {
            return Err(());
        }
        self.sent.lock().unwrap().push(Sent::Data(data.to_vec()));
        Ok(())
    }
    async fn consumed(&self, bytes: u64) {
        self.consumed.fetch_add(bytes, Ordering::SeqCst);
    }
    async fn eof(&self) {
        self.sent.lock().unwrap().push(Sent::Eof);
    }
    async fn close(&self) {
        self.sent.lock().unwrap().push(Sent::Close);
    }
}

/// A pump between a fake channel and a real TCP connection; the test holds the target's end,
/// the vendor's inbound queue and the two stop signals.
struct Rig {
    target: tokio::net::TcpStream,
    vendor: UnboundedSender<Inbound>,
    sink: Arc<FakeSink>,
    forward_closed: watch::Sender<Option<String>>,
    session: Option<watch::Sender<Option<String>>>,
    pump: tokio::task::JoinHandle<PumpReport>,
}

async fn rig(cap: u64) -> Rig {
    rig_with_idle(cap, None).await
}

async fn rig_with_idle(cap: u64, idle: Option<Duration>) -> Rig {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_side = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (target, _) = listener.accept().await.unwrap();
    let (vendor, inbound) = mpsc::unbounded_channel();
    let sink = Arc::new(FakeSink::default());
    let forward_closed = watch::Sender::new(None);
    let session = watch::Sender::new(None);
    let stop = Stop::new(forward_closed.subscribe(), session.subscribe());
    let budget = ConnBudget::new(cap, TotalBudget::new(cap * 4));
    let meter = Metrics::new().forward("t");
    let pump = tokio::spawn({
        let sink = sink.clone();
        async move { pump(agent_side, inbound, sink, budget, &meter, stop, idle).await }
    });
    Rig {
        target,
        vendor,
        sink,
        forward_closed,
        session: Some(session),
        pump,
    }
}

async fn finish(pump: tokio::task::JoinHandle<PumpReport>) -> PumpReport {
    tokio::time::timeout(Duration::from_secs(60), pump)
        .await
        .expect("the pump ended")
        .unwrap()
}

#[tokio::test]
async fn vendor_half_closes_first_then_the_target_answers_and_closes() {
    let mut r = rig(1 << 20).await;
    r.vendor
        .send(Inbound::Data(Bytes::from_static(b"GET /")))
        .unwrap();
    r.vendor
        .send(Inbound::Data(Bytes::from_static(b" HTTP/1.0\r\n\r\n")))
        .unwrap();
    r.vendor.send(Inbound::Eof).unwrap();
    let mut request = Vec::new();
    r.target.read_to_end(&mut request).await.unwrap();
    assert_eq!(
        request, b"GET / HTTP/1.0\r\n\r\n",
        "every byte, in order, then EOF"
    );
    r.target
        .write_all(b"HTTP/1.0 200 OK\r\n\r\nhi")
        .await
        .unwrap();
    r.target.shutdown().await.unwrap();
    let report = finish(r.pump).await;
    assert_eq!(r.sink.data(), b"HTTP/1.0 200 OK\r\n\r\nhi");
    assert_eq!(r.sink.sent().last(), Some(&Sent::Close));
    assert!(r.sink.sent().contains(&Sent::Eof));
    assert_eq!(report.end, End::VendorClosed);
    assert!(!report.end.is_failure());
    assert_eq!((report.to_target, report.from_target), (18, 21));
    assert_eq!(
        r.sink.consumed.load(Ordering::SeqCst),
        18,
        "the window given back"
    );
}

#[tokio::test]
async fn target_half_closes_first_and_the_vendor_may_still_send() {
    let mut r = rig(1 << 20).await;
    r.target.write_all(b"banner\n").await.unwrap();
    r.target.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r.sink.sent().contains(&Sent::Eof) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(r.sink.sent(), [Sent::Data(b"banner\n".to_vec()), Sent::Eof]);
    r.vendor
        .send(Inbound::Data(Bytes::from_static(b"late words")))
        .unwrap();
    r.vendor.send(Inbound::Eof).unwrap();
    let mut got = Vec::new();
    r.target.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"late words");
    let report = finish(r.pump).await;
    assert_eq!(report.end, End::TargetClosed);
    assert!(!report.end.is_failure());
}

#[tokio::test]
async fn a_vendor_that_closes_the_channel_is_not_a_lost_session() {
    let mut r = rig(1 << 20).await;
    // The vendor's client hung up: its channel is gone while the target still talks, and the
    // session lives on.
    r.sink.gone.store(true, Ordering::SeqCst);
    r.target.write_all(b"still talking").await.unwrap();
    let report = finish(r.pump).await;
    assert_eq!(report.end, End::VendorClosed);
    assert!(
        !report.end.is_failure(),
        "a vendor hanging up is no failure"
    );

    let r = rig(1 << 20).await;
    drop(r.vendor);
    let report = finish(r.pump).await;
    assert_eq!(report.end, End::VendorClosed, "channel closed without EOF");
}

#[tokio::test]
async fn a_closed_forward_stops_the_connection_as_policy_and_a_lost_session_as_a_failure() {
    let r = rig(1 << 20).await;
    r.forward_closed.send_replace(Some(
        "the forward was removed from the configuration".into(),
    ));
    let report = finish(r.pump).await;
    assert_eq!(
        report.end,
        End::Policy("the forward was removed from the configuration".into())
    );
    assert!(!report.end.is_failure());
    assert_eq!(
        r.sink.sent().last(),
        Some(&Sent::Close),
        "the channel is closed"
    );

    let mut r = rig(1 << 20).await;
    drop(r.session.take());
    let report = finish(r.pump).await;
    assert_eq!(report.end, End::SessionLost);
    assert!(report.end.is_failure());
}

#[tokio::test]
async fn an_overflowing_budget_closes_only_with_a_limit() {
    let r = rig(1024).await;
    r.vendor
        .send(Inbound::Overflow(Overflow::Connection { cap: 1024 }))
        .unwrap();
    let report = finish(r.pump).await;
    assert!(matches!(&report.end, End::Limit(why) if why.contains("limits.connection_buffer")));
    assert!(report.end.is_failure());
    assert_eq!(r.sink.sent().last(), Some(&Sent::Close));
}

#[tokio::test]
async fn a_protocol_violation_closes_only_this_connection_as_a_failure() {
    let r = rig(1 << 20).await;
    r.vendor
        .send(Inbound::Violation(
            "sent extended data on a forwarded TCP connection",
        ))
        .unwrap();
    let report = finish(r.pump).await;
    assert!(matches!(&report.end, End::Protocol(why) if why.contains("extended data")));
    assert_eq!(report.end.class(), "protocol");
    assert!(report.end.is_failure());
    assert_eq!(r.sink.sent().last(), Some(&Sent::Close));
}

#[tokio::test]
async fn a_violation_after_the_vendors_eof_still_closes_the_connection() {
    let mut r = rig(1 << 20).await;
    r.vendor
        .send(Inbound::Data(Bytes::from_static(b"req")))
        .unwrap();
    r.vendor.send(Inbound::Eof).unwrap();
    let mut got = Vec::new();
    r.target.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"req");
    // The target keeps its side open (as a server waiting to answer would); the vendor breaks
    // the protocol after its EOF.
    r.vendor
        .send(Inbound::Violation("sent more after its end of data (EOF)"))
        .unwrap();
    let report = finish(r.pump).await;
    assert!(matches!(&report.end, End::Protocol(why) if why.contains("after its end")));
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_closes_only_a_connection_silent_that_long_either_way() {
    let idle = Duration::from_secs(300);
    let mut r = rig_with_idle(1 << 20, Some(idle)).await;
    r.vendor
        .send(Inbound::Data(Bytes::from_static(b"ping")))
        .unwrap();
    let mut buf = [0u8; 4];
    r.target.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(Duration::from_secs(240)).await;
    r.target.write_all(b"pong").await.unwrap();
    while r.sink.data() != b"pong" {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 290 s after the last byte (from the target): still open.
    tokio::time::sleep(Duration::from_secs(290)).await;
    assert!(
        !r.pump.is_finished(),
        "closed before idle_timeout of silence"
    );
    let report = finish(r.pump).await;
    assert!(
        matches!(&report.end, End::Policy(why) if why.contains("idle_timeout")),
        "{:?}",
        report.end
    );
    assert!(!report.end.is_failure());
}

#[tokio::test]
async fn a_cut_connection_ends_as_shutdown_even_when_its_session_is_gone_too() {
    let forward = watch::Sender::new(None);
    let session = watch::Sender::new(None);
    let cut = CancellationToken::new();
    let mut stop = Stop::new(forward.subscribe(), session.subscribe()).cut_by(cut.clone());
    assert_eq!(stop.now(), None);
    // The agent cuts, then disconnects: by the time the pump looks, both have happened.
    cut.cancel();
    drop(session);
    assert_eq!(stop.now(), Some(End::Shutdown));
    assert_eq!(stop.wait().await, End::Shutdown);
    assert!(
        !End::Shutdown.is_failure(),
        "an operator's stop is no failure"
    );
    assert_eq!(End::Shutdown.class(), "shutdown");
}
