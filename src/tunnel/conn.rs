//! One forwarded connection, outside of SSH: route the server's channel to a forward, take a
//! connection slot, dial the configured target, answer the channel, pump, and log how it ended.
//!
//! The SSH layer hands each `forwarded-tcpip` open over as an [`IncomingChannel`] (it knows how
//! to accept or reject it); everything else about the connection is decided here.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::budget::{ConnBudget, TotalBudget};
use super::drain::Connections;
use super::pump::{ChannelSink, Inbound, PumpReport, Stop, TargetStream, pump};
use super::state::TunnelState;
use crate::audit::{ConnectionRecord, RefusedRecord, bounded};
use crate::config::{Forward, Limits};
use crate::fault::Fault;
use crate::gateway::{self, ConnectProxy, Gateway};
use crate::logging::{Throttle, printable};
use crate::net::{self, AddressRefused, Rule};

/// Why a channel the server opened is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No forward asked for on this session listens there.
    NotListed,
    /// The originator is not an IP address and port, which is all a TCP listener can report.
    BadOriginator,
    /// `limits.max_connections` connections are open.
    ConnectionLimit,
    /// The target did not accept the connection.
    TargetUnreachable,
    /// The target's name resolved only to addresses it may not reach (`crate::net::Rule`):
    /// loopback, link-local and the like, or outside the forward's `allow`.
    TargetAddressRefused,
    /// The audit trail cannot be written and `audit.on_failure` is `refuse`.
    AuditUnavailable,
    /// The agent is stopping: the open connections drain, no new one starts.
    ShuttingDown,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.class())
    }
}

impl Fault for Rejection {
    /// A short stable name, for the audit trail's `refused` records.
    fn class(&self) -> &'static str {
        match self {
            Rejection::NotListed => "not_listed",
            Rejection::BadOriginator => "bad_originator",
            Rejection::ConnectionLimit => "connection_limit",
            Rejection::TargetUnreachable => "target_unreachable",
            Rejection::TargetAddressRefused => "target_address_refused",
            Rejection::AuditUnavailable => "audit_unavailable",
            Rejection::ShuttingDown => "shutting_down",
        }
    }
}

/// A channel the server asked to open, not answered yet: the SSH layer's side of it.
pub trait IncomingChannel: Send + 'static {
    type Sink: ChannelSink;
    /// Accepts the channel and returns its two ends: what the vendor sends, in order, charged
    /// to `budget`; and where bytes for the vendor go.
    fn accept(
        self,
        budget: Arc<ConnBudget>,
    ) -> impl Future<Output = (UnboundedReceiver<Inbound>, Arc<Self::Sink>)> + Send;
    fn reject(self, why: Rejection) -> impl Future<Output = ()> + Send;
}

/// Where a forwarded connection says it came from, as the server put it in the channel open.
pub struct Originator<'a> {
    pub address: &'a str,
    pub port: u32,
}

impl Originator<'_> {
    /// `IP:PORT` (`[IPv6]:PORT`). Anything else is refused: the text would otherwise reach every
    /// log line of the connection as the server chose it.
    fn parse(&self) -> Option<SocketAddr> {
        // An IPv6 zone ("fe80::1%eth0") names a local interface of the server: keep the address.
        let ip = self.address.split('%').next()?.parse::<IpAddr>().ok()?;
        let port = u16::try_from(self.port).ok()?;
        Some(SocketAddr::new(ip, port))
    }
}

/// A server can open channels as fast as it can write: each kind of refusal logs at most a
/// burst of lines every ten seconds (the metrics count every one).
static UNLISTED_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));
static ORIGINATOR_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));
static LIMIT_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));
static AUDIT_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));
static STOPPING_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));
static ADDRESS_LOG: Throttle = Throttle::new(20, Duration::from_secs(10));

/// Answers one `forwarded-tcpip` open for (`address`, `port`) from `origin`. Decides at once
/// whether the channel may be served; the target dial and the pump run in a task of their own,
/// so the SSH session never waits on them. `session` ends the connection with the session.
pub async fn open<C: IncomingChannel>(
    ctx: &Arc<ConnContext>,
    address: &str,
    port: u32,
    origin: Originator<'_>,
    session: watch::Receiver<Option<String>>,
    channel: C,
) {
    let refused = |forward: Option<&Forward>, why: Rejection, detail: Option<String>| {
        if ctx.state.audit().is_on() {
            ctx.state.audit().refused(RefusedRecord {
                forward: forward.map(|f| f.name.clone()),
                address: bounded(address),
                port,
                originator: bounded(origin.address),
                originator_port: origin.port,
                why: why.class(),
                detail,
            });
        }
    };
    let Some(route) = ctx.state.route(address, port) else {
        ctx.state.metrics.channel_refused("not_listed");
        if UNLISTED_LOG.allow("rejected connections for ports this agent did not request") {
            warn!(address = %printable(address), port,
                "rejected forwarded connection for a port this agent did not request");
        }
        refused(None, Rejection::NotListed, None);
        channel.reject(Rejection::NotListed).await;
        return;
    };
    let Some(from) = origin.parse() else {
        ctx.state.metrics.channel_refused("bad_originator");
        if ORIGINATOR_LOG.allow("rejected connections with a bad originator") {
            warn!(forward = %route.forward.name, originator = %printable(origin.address), port = origin.port,
                "rejected forwarded connection: the server named an originator that is not an IP address and port");
        }
        refused(Some(&route.forward), Rejection::BadOriginator, None);
        channel.reject(Rejection::BadOriginator).await;
        return;
    };
    let forward = route.forward.clone();
    // No vendor connection that the audit trail cannot record (`audit.on_failure: refuse`).
    if !ctx.state.audit().accepting() {
        if AUDIT_LOG.allow("rejected connections while the audit trail cannot be written") {
            warn!(forward = %forward.name, from = %from,
                "rejected forwarded connection: the audit trail cannot be written (audit.on_failure: refuse)");
        }
        route.metrics.rejected.inc();
        refused(Some(&forward), Rejection::AuditUnavailable, None);
        channel.reject(Rejection::AuditUnavailable).await;
        return;
    }
    // Stopping: the open connections drain (`super::drain`), no new one starts.
    if !ctx.conns.accepting() {
        if STOPPING_LOG.allow("rejected connections while the agent stops") {
            info!(forward = %forward.name, from = %from,
                "rejected forwarded connection: the agent is stopping");
        }
        route.metrics.rejected.inc();
        refused(Some(&forward), Rejection::ShuttingDown, None);
        channel.reject(Rejection::ShuttingDown).await;
        return;
    }
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        if LIMIT_LOG.allow("rejected connections over limits.max_connections") {
            warn!(forward = %forward.name, from = %from, max = ctx.limits.max_connections,
                "rejected forwarded connection: limits.max_connections reached");
        }
        route.metrics.rejected.inc();
        refused(
            Some(&forward),
            Rejection::ConnectionLimit,
            Some("limits.max_connections reached".into()),
        );
        channel.reject(Rejection::ConnectionLimit).await;
        return;
    };
    let own_permit = match route.slots.clone().map(Semaphore::try_acquire_owned) {
        Some(Err(_)) => {
            if LIMIT_LOG.allow("rejected connections over limits.max_connections") {
                warn!(forward = %forward.name, from = %from, max = forward.limits.max_connections,
                    "rejected forwarded connection: the forward's max_connections reached");
            }
            route.metrics.rejected.inc();
            refused(
                Some(&forward),
                Rejection::ConnectionLimit,
                Some("the forward's max_connections reached".into()),
            );
            channel.reject(Rejection::ConnectionLimit).await;
            return;
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let ctx = ctx.clone();
    let span = info_span!("conn", forward = %forward.name, from = %from, target = %forward.target(),
        addr = tracing::field::Empty);
    // Tracked, so that a stop waits for its audit record (`super::drain`).
    let conns = ctx.conns.clone();
    conns.spawn(
        async move {
            let _permits = (permit, own_permit);
            let meter = route.metrics;
            if let Some(gateway) = ctx.gateway(&forward) {
                let stop = Stop::new(route.closed, session).cut_by(ctx.conns.cut_signal());
                serve_http(&ctx, &forward, from, gateway, channel, &meter, stop).await;
                return;
            }
            let dialed = dial_target(&forward, ctx.target_connect).await;
            let result = dialed.as_ref().map(drop).map_err(ToString::to_string);
            // Logged by the target's health when it goes down and comes back, not per connection.
            ctx.state.targets.record(&forward.target(), result);
            let (tcp, target_addr) = match dialed {
                Ok(dialed) => dialed,
                Err(e) => {
                    let why = if let Some(refused) = AddressRefused::of(&e) {
                        if ADDRESS_LOG.allow("refused target addresses") {
                            warn!(addr = %refused.addr, why = %refused.why, "{refused}; connection refused to the vendor");
                        }
                        Rejection::TargetAddressRefused
                    } else {
                        debug!(error = %e, "target unreachable; connection refused to the vendor");
                        Rejection::TargetUnreachable
                    };
                    meter.rejected.inc();
                    if ctx.state.audit().is_on() {
                        ctx.state.audit().refused(RefusedRecord {
                            forward: Some(forward.name.clone()),
                            address: forward.remote_addr.clone(),
                            port: u32::from(forward.remote_port),
                            originator: from.ip().to_string(),
                            originator_port: u32::from(from.port()),
                            why: why.class(),
                            detail: Some(bounded(&e.to_string())),
                        });
                    }
                    channel.reject(why).await;
                    return;
                }
            };
            tracing::Span::current().record("addr", tracing::field::display(target_addr));
            let stop = Stop::new(route.closed, session).cut_by(ctx.conns.cut_signal());
            let target = Carried {
                stream: tcp,
                addr: Some(target_addr),
            };
            carry(&ctx, &forward, from, channel, &meter, stop, target, async {}).await;
        }
        .instrument(span),
    );
}

/// One forwarded connection of an HTTP or CONNECT forward: the channel is pumped (byte
/// budgets, idle timeout and stop as for any connection) to an in-process stream the forward's
/// gateway serves; nothing is dialed until a request passes the gateway's filter.
async fn serve_http<C: IncomingChannel>(
    ctx: &Arc<ConnContext>,
    forward: &Forward,
    from: SocketAddr,
    gateway: Service,
    channel: C,
    meter: &super::metrics::ForwardMetrics,
    stop: Stop,
) {
    let (ours, theirs) = tokio::io::duplex(GATEWAY_BUFFER);
    let target = Carried {
        stream: ours,
        addr: None,
    };
    let served = gateway.serve(theirs, from);
    carry(ctx, forward, from, channel, meter, stop, target, served).await;
}

/// The target end of a connection about to be carried, and the address it reached (none for
/// a gateway's in-process stream).
struct Carried<T> {
    stream: T,
    addr: Option<SocketAddr>,
}

/// Accepts the channel and pumps it to `target` (with `beside`, the gateway serving the other
/// end of an in-process stream, running alongside) until the connection ends; then its
/// metrics, its closing log line and its one audit record.
#[allow(clippy::too_many_arguments)]
async fn carry<C: IncomingChannel, T: TargetStream>(
    ctx: &ConnContext,
    forward: &Forward,
    from: SocketAddr,
    channel: C,
    meter: &super::metrics::ForwardMetrics,
    stop: Stop,
    target: Carried<T>,
    beside: impl Future<Output = ()>,
) {
    let budget = ConnBudget::new(ctx.limits.connection_buffer, ctx.total_budget.clone());
    let (inbound, sink) = channel.accept(budget.clone()).await;
    let opened = SystemTime::now();
    meter.opened.inc();
    meter.open.inc();
    let idle = forward.limits.idle_timeout;
    let pumped = pump(target.stream, inbound, sink, budget, meter, stop, idle);
    let (report, ()) = tokio::join!(pumped, beside);
    meter.open.dec();
    if report.end.is_failure() {
        meter.failed.inc();
    }
    log_end(&report);
    if ctx.state.audit().is_on() {
        // One record per connection, built after it ended: nothing per packet.
        ctx.state.audit().connection(ConnectionRecord {
            forward: forward.name.clone(),
            originator: from,
            target: forward.target(),
            target_addr: target.addr,
            opened,
            closed: SystemTime::now(),
            to_target: report.to_target,
            from_target: report.from_target,
            end: report.end.class(),
            detail: report.end.detail().map(bounded),
        });
    }
    crate::memory::note_connection_closed();
}

/// Bytes in flight each way between a forwarded connection and its gateway: four read chunks,
/// so a streamed download hands over whole chunks without waiting on each one.
const GATEWAY_BUFFER: usize = 4 * super::pump::READ_CHUNK;

/// What the SSH handler needs to serve forwarded connections.
#[derive(Debug)]
pub struct ConnContext {
    pub state: Arc<TunnelState>,
    pub total_budget: Arc<TotalBudget>,
    pub limits: Limits,
    pub target_connect: Duration,
    /// One permit per open forwarded connection (`limits.max_connections`).
    pub slots: Arc<Semaphore>,
    /// Every connection's task, for the drain at stop; the same set across reloads.
    pub conns: Connections,
    /// The gateway of each HTTP forward by name, with its upstream pool; replaced when a
    /// reload changes the forward's settings.
    gateways: Mutex<HashMap<String, Service>>,
    /// The state folder, where an HTTP forward with `listen_tls` keeps its TLS identity.
    pub state_dir: Option<std::path::PathBuf>,
}

impl ConnContext {
    /// `limits.max_connections` is lowered to what the open-files limit allows
    /// ([`fit_to_descriptors`]); the configuration keeps what it says.
    pub fn new(
        state: Arc<TunnelState>,
        limits: Limits,
        target_connect: Duration,
        conns: Connections,
        state_dir: Option<std::path::PathBuf>,
    ) -> Arc<Self> {
        let mut limits = limits;
        limits.max_connections = fit_to_descriptors(limits.max_connections);
        Arc::new(Self {
            state,
            conns,
            total_budget: TotalBudget::new(limits.total_buffer),
            limits,
            target_connect,
            slots: Arc::new(Semaphore::new(limits.max_connections as usize)),
            gateways: Mutex::new(HashMap::new()),
            state_dir,
        })
    }

    /// What serves `forward`'s connections when it is an HTTP or CONNECT forward: the one
    /// made for its current settings, made on first use (and kept, with its upstream pool).
    pub fn gateway(&self, forward: &Forward) -> Option<Service> {
        if forward.http.is_none() && forward.connect.is_none() {
            return None;
        }
        let mut gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(service) = gateways.get(&forward.name)
            && service.serves(forward)
        {
            return Some(service.clone());
        }
        let ctx = || gateway::Context {
            allow: forward.allow.clone(),
            connect_timeout: self.target_connect,
            audit: self.state.audit().clone(),
            metrics: self.state.metrics.gateway.clone(),
            state_dir: self.state_dir.clone(),
        };
        let service = match (&forward.http, &forward.connect) {
            (Some(http), _) => Service::Http(Gateway::new(&forward.name, http.clone(), ctx())),
            (None, Some(connect)) => {
                Service::Connect(ConnectProxy::new(&forward.name, connect.clone(), ctx()))
            }
            (None, None) => return None,
        };
        gateways.insert(forward.name.clone(), service.clone());
        Some(service)
    }
}

/// What serves an HTTP or CONNECT forward's connections.
#[derive(Debug, Clone)]
pub enum Service {
    Http(Arc<Gateway>),
    Connect(Arc<ConnectProxy>),
}

impl Service {
    /// Made for `forward`'s current settings (a reload that changed them makes a new one).
    fn serves(&self, forward: &Forward) -> bool {
        match self {
            Service::Http(g) => forward.http.as_ref() == Some(g.settings()),
            Service::Connect(c) => forward.connect.as_ref() == Some(c.settings()),
        }
    }

    async fn serve(&self, io: tokio::io::DuplexStream, from: SocketAddr) {
        match self {
            Service::Http(g) => g.serve(io, from).await,
            Service::Connect(c) => c.serve(io, from).await,
        }
    }
}

/// Descriptors kept for everything but vendor connections (each holds one, to its target): the
/// SSH session, the admin endpoint's connections, the control socket and its clients, the
/// state and audit files, target probes, the webhook.
pub const RESERVED_DESCRIPTORS: u64 = 160;

/// `max_connections`, or less: what the open-files limit leaves after [`RESERVED_DESCRIPTORS`],
/// so a vendor's connections can never take the descriptors `agent pause` and health need.
pub fn fit_to_descriptors(max_connections: u32) -> u32 {
    let limit = crate::sys::open_files_limit();
    let fits = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .clamp(1, u64::from(u32::MAX));
    max_connections.min(fits as u32)
}

/// Connects to the forward's target, within `timeout` however many addresses its name has,
/// and only to an address the target's rule lets through (an error wrapping
/// [`AddressRefused`] otherwise). Returns the stream and the address it reached. Only the
/// configured target is ever dialed: the server's channel request names nothing here.
pub async fn dial_target(
    forward: &Forward,
    timeout: Duration,
) -> io::Result<(TcpStream, SocketAddr)> {
    let rule = Rule::Target {
        allow: &forward.allow,
    };
    let (s, addr) =
        net::connect_any(&forward.target_host, forward.target_port, timeout, rule).await?;
    // No Nagle delay, and TCP keepalive (a target that vanishes silently is found).
    net::target_side(&s);
    Ok((s, addr))
}

/// The one line per forwarded connection, in the current (connection) span: info when an end
/// or the customer's configuration closed it, warn for a failure.
pub fn log_end(report: &PumpReport) {
    let ms = report.duration.as_millis() as u64;
    let (to_target, from_target, end) = (report.to_target, report.from_target, &report.end);
    let detail = end.detail().unwrap_or_default();
    if end.is_failure() {
        warn!(to_target, from_target, duration_ms = ms, end = %end.class(), detail, "connection closed");
    } else if detail.is_empty() {
        info!(to_target, from_target, duration_ms = ms, end = %end.class(), "connection closed");
    } else {
        info!(to_target, from_target, duration_ms = ms, end = %end.class(), detail, "connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A channel that only notes how it was refused; never accepted in these tests.
    struct Refusable(Arc<Mutex<Vec<Rejection>>>);

    struct NoSink;

    impl ChannelSink for NoSink {
        async fn send(&self, _: bytes::Bytes) -> Result<(), ()> {
            Err(())
        }
        async fn consumed(&self, _: u64) {}
        async fn eof(&self) {}
        async fn close(&self) {}
    }

    impl IncomingChannel for Refusable {
        type Sink = NoSink;
        async fn accept(self, _: Arc<ConnBudget>) -> (UnboundedReceiver<Inbound>, Arc<NoSink>) {
            panic!("a channel the audit trail cannot record was accepted");
        }
        async fn reject(self, why: Rejection) {
            self.0.lock().unwrap().push(why);
        }
    }

    /// Log lines, as the fmt subscriber writes them.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A server that opens channel after channel while the audit trail cannot be written
    /// (`on_failure: refuse`) gets every one refused, and the log a burst of lines, not one each.
    #[tokio::test]
    async fn refusals_while_the_audit_trail_cannot_be_written_are_throttled() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let lines = lines.clone();
                move || lines.clone()
            })
            .with_ansi(false)
            .finish();
        let _log = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let forward = Forward {
            name: "db".into(),
            remote_addr: "localhost".into(),
            remote_port: 5000,
            target_host: "127.0.0.1".into(),
            target_port: 5432,
            limits: Default::default(),
            access: None,
            tls: None,
            allow: Vec::new(),
            http: None,
            connect: None,
        };
        let state = TunnelState::new(std::slice::from_ref(&forward));
        let settings = crate::audit::Settings {
            // A folder that does not exist: the trail cannot be opened.
            file: dir.path().join("gone").join("audit.jsonl"),
            on_failure: crate::audit::OnFailure::Refuse,
            max_size: crate::audit::DEFAULT_MAX_SIZE,
            head_interval: crate::audit::DEFAULT_HEAD_INTERVAL,
        };
        state.attach_audit(crate::audit::Audit::start(
            &settings,
            state.metrics.audit.clone(),
        ));
        assert!(!state.audit().accepting());
        let n = state.connected("server:22".into(), Duration::from_millis(1));
        state.set_forward(n, &forward, super::super::state::ForwardState::Granted);
        let ctx = ConnContext::new(
            state.clone(),
            Limits::default(),
            Duration::from_secs(1),
            Connections::new(),
            None,
        );
        let answers = Arc::new(Mutex::new(Vec::new()));
        for i in 0..1000 {
            let origin = Originator {
                address: "203.0.113.7",
                port: 40000 + i,
            };
            let session = watch::Sender::new(None).subscribe();
            open(
                &ctx,
                "localhost",
                5000,
                origin,
                session,
                Refusable(answers.clone()),
            )
            .await;
        }
        let answers = answers.lock().unwrap();
        assert_eq!(answers.len(), 1000);
        assert!(answers.iter().all(|a| *a == Rejection::AuditUnavailable));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let refusals = text.matches("the audit trail cannot be written").count();
        assert!((1..=20).contains(&refusals), "{refusals} lines:\n{text}");
    }

    #[tokio::test]
    async fn target_sockets_are_tuned_as_targets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let forward = Forward {
            name: "t".into(),
            remote_addr: "localhost".into(),
            remote_port: 5000,
            target_host: "127.0.0.1".into(),
            target_port: listener.local_addr().unwrap().port(),
            limits: Default::default(),
            access: None,
            tls: None,
            allow: Vec::new(),
            http: None,
            connect: None,
        };
        let (tcp, _) = dial_target(&forward, Duration::from_secs(5)).await.unwrap();
        // What `net::target_side` sets (its own test checks each value).
        assert!(tcp.nodelay().unwrap());
        assert!(socket2::SockRef::from(&tcp).keepalive().unwrap());
    }

    #[test]
    fn only_an_ip_address_and_port_is_an_originator() {
        let parse = |address: &str, port: u32| Originator { address, port }.parse();
        assert_eq!(
            parse("203.0.113.7", 51000).unwrap().to_string(),
            "203.0.113.7:51000"
        );
        assert_eq!(
            parse("2001:db8::1", 443).unwrap().to_string(),
            "[2001:db8::1]:443"
        );
        assert_eq!(
            parse("fe80::1%eth0", 22).unwrap().to_string(),
            "[fe80::1]:22"
        );
        for bad in [
            "",
            "localhost",
            "1.2.3.4\nINFO forged",
            &"9".repeat(10_000),
            "1.2.3.4:5",
        ] {
            assert!(parse(bad, 1).is_none(), "{bad:?}");
        }
        assert!(parse("1.2.3.4", 70_000).is_none(), "a port above 65535");
    }
}
