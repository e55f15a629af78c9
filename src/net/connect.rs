//! A name resolved and its addresses tried in turn, the whole attempt within one timeout.
//!
//! The rule, Go's `net.Dialer` rule: the lookup and every connect share one deadline; each
//! address in turn gets an equal share of the time left (at least [`MIN_SHARE`], taken from
//! the addresses at the end of the list), so one silent address does not eat the time of the
//! others, and a name with N addresses never takes N times the timeout.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::rule::Rule;

/// The least time one address gets while the deadline allows it: a connect over a slow link
/// needs a round trip or two, and two seconds covers any link a target sits on.
const MIN_SHARE: Duration = Duration::from_secs(2);

/// Resolves `host` (an IP address is used as it is), bounded by `timeout`.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the name resolved to no address",
                ));
            }
            Ok(addrs)
        }
        Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("DNS lookup failed: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("DNS lookup got no answer within {}", secs(timeout)),
        )),
    }
}

/// TCP to `host:port`: resolve, drop the addresses `rule` refuses, then the first address that
/// accepts, all within `timeout`. Returns the stream and the address it reached. When `rule`
/// leaves no address, the error wraps an [`super::AddressRefused`].
pub async fn connect_any(
    host: &str,
    port: u16,
    timeout: Duration,
    rule: Rule<'_>,
) -> io::Result<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    let addrs = resolve(host, port, timeout).await?;
    dial_resolved(host, port, &addrs, deadline, rule, TcpStream::connect).await
}

/// [`connect_any`] after the lookup, with the connect injected (tests pass one that never
/// answers).
async fn dial_resolved<T, F, Fut>(
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    deadline: Instant,
    rule: Rule<'_>,
    connect: F,
) -> io::Result<(T, SocketAddr)>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let (permitted, refused) = rule.split(host, port, addrs);
    if permitted.is_empty()
        && let Some(refused) = refused
    {
        return Err(refused.into());
    }
    match first_of(&permitted, deadline, connect).await {
        (Some(connected), _) => Ok(connected),
        (None, failures) => Err(failures.into_io()),
    }
}

/// TCP to the first of `addrs` that accepts, all before `deadline` (the share rule above),
/// and the addresses that failed on the way, for callers that report each.
pub async fn connect_first(
    addrs: &[SocketAddr],
    deadline: Instant,
) -> (Option<(TcpStream, SocketAddr)>, Failures) {
    first_of(addrs, deadline, TcpStream::connect).await
}

/// TCP to one address, bounded by `timeout`: for a caller that runs more than a connect on
/// each address in turn (the SSH ladder runs the handshake there too) and bounds each itself.
pub async fn connect_addr(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(silent(addr, timeout)),
    }
}

async fn first_of<T, F, Fut>(
    addrs: &[SocketAddr],
    deadline: Instant,
    mut connect: F,
) -> (Option<(T, SocketAddr)>, Failures)
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut failures = Failures::default();
    for (n, &addr) in addrs.iter().enumerate() {
        let Some(share) = share(Instant::now(), deadline, addrs.len() - n) else {
            failures.untried = addrs.len() - n;
            break;
        };
        match tokio::time::timeout(share, connect(addr)).await {
            Ok(Ok(stream)) => return (Some((stream, addr)), failures),
            Ok(Err(e)) => failures.tried.push((addr, e)),
            Err(_) => failures.tried.push((addr, silent(addr, share))),
        }
    }
    (None, failures)
}

/// How long the next of `left` addresses may take: an equal share of the time to `deadline`,
/// at least [`MIN_SHARE`] (or what is left, if less); `None` once the deadline has passed.
fn share(now: Instant, deadline: Instant, left: usize) -> Option<Duration> {
    let remaining = deadline.checked_duration_since(now)?;
    if remaining.is_zero() {
        return None;
    }
    let equal = remaining / u32::try_from(left.max(1)).unwrap_or(u32::MAX);
    Some(equal.max(MIN_SHARE.min(remaining)))
}

fn silent(addr: SocketAddr, waited: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "TCP connect to {addr} got no answer within {} (a firewall dropping the port?)",
            secs(waited)
        ),
    )
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f32())
}

/// Why no address connected: each one tried with its error, and how many the deadline left
/// untried.
#[derive(Debug, Default)]
pub struct Failures {
    pub tried: Vec<(SocketAddr, io::Error)>,
    pub untried: usize,
}

impl Failures {
    /// One error for callers that report one: the kind of the last failure (a timeout when the
    /// deadline left addresses untried), every address's error in the text.
    pub fn into_io(self) -> io::Error {
        let kind = match self.tried.last() {
            _ if self.untried > 0 => io::ErrorKind::TimedOut,
            Some((_, e)) => e.kind(),
            None => io::ErrorKind::NotFound,
        };
        io::Error::new(kind, self.to_string())
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tried.is_empty() && self.untried == 0 {
            return f.write_str("the name resolved to no address");
        }
        let each: Vec<String> = self
            .tried
            .iter()
            .map(|(addr, e)| {
                let text = e.to_string();
                // A timeout's text names its address already.
                if text.contains(&addr.to_string()) {
                    text
                } else {
                    format!("{text} ({addr})")
                }
            })
            .collect();
        f.write_str(&each.join("; "))?;
        if self.untried > 0 {
            let sep = if each.is_empty() { "" } else { "; " };
            write!(
                f,
                "{sep}{} more address(es) not tried: the timeout was spent",
                self.untried
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::AddressRefused;
    use std::sync::{Arc, Mutex};

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    /// A connect that never answers (a blackholed address), noting when each began.
    fn blackhole(
        log: Arc<Mutex<Vec<(SocketAddr, Instant)>>>,
    ) -> impl FnMut(SocketAddr) -> std::future::Pending<io::Result<()>> {
        move |addr| {
            log.lock().unwrap().push((addr, Instant::now()));
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_with_several_silent_addresses_ends_at_the_one_deadline() {
        let list = addrs(&[
            "192.0.2.1:443",
            "192.0.2.2:443",
            "192.0.2.3:443",
            "[2001:db8::1]:443",
        ]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let e = dial_resolved(
            "jira.example",
            443,
            &list,
            deadline,
            Rule::Any,
            blackhole(log.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(10),
            "not 4 x 10s"
        );
        // Each address got an equal share of what was left: 2.5s each, all four tried.
        let log = log.lock().unwrap();
        let began: Vec<Duration> = log.iter().map(|(_, at)| *at - start).collect();
        assert_eq!(
            began,
            [0, 2500, 5000, 7500].map(Duration::from_millis),
            "{e}"
        );
        assert!(e.to_string().contains("[2001:db8::1]:443"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_timeout_gives_the_first_addresses_two_seconds_each_and_stops() {
        let list = addrs(&[
            "192.0.2.1:80",
            "192.0.2.2:80",
            "192.0.2.3:80",
            "192.0.2.4:80",
        ]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        let e = dial_resolved(
            "db.example",
            80,
            &list,
            deadline,
            Rule::Any,
            blackhole(log.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        assert_eq!(log.lock().unwrap().len(), 2, "2s, then the 1s left");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            e.to_string().contains("2 more address(es) not tried"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_address_passes_on_to_the_next_at_once() {
        let list = addrs(&["192.0.2.1:80", "192.0.2.2:80"]);
        let first = list[0];
        let connect = move |addr: SocketAddr| async move {
            if addr == first {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            } else {
                Ok(addr)
            }
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let (got, at) = dial_resolved("db.example", 80, &list, deadline, Rule::Any, connect)
            .await
            .unwrap();
        assert_eq!((got, at), (list[1], list[1]));
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lying_answer_is_refused_before_any_connect() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(10);
        for lie in [
            "127.0.0.1:443",
            "169.254.169.254:443",
            "[::ffff:127.0.0.1]:443",
            "[fe80::1]:443",
        ] {
            let list = addrs(&[lie]);
            let rule = Rule::Target { allow: &[] };
            let e = dial_resolved(
                "jira.acme.internal",
                443,
                &list,
                deadline,
                rule,
                blackhole(log.clone()),
            )
            .await
            .unwrap_err();
            let refused = AddressRefused::of(&e).unwrap_or_else(|| panic!("{lie}: {e}"));
            assert_eq!(refused.addr, list[0]);
            let text = e.to_string();
            assert!(text.contains("jira.acme.internal:443"), "{text}");
            assert!(text.contains(lie), "{text}");
        }
        assert!(log.lock().unwrap().is_empty(), "nothing dialed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_with_a_good_and_a_lying_address_dials_only_the_good_one() {
        let list = addrs(&["127.0.0.1:443", "10.1.2.3:443"]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(4);
        let rule = Rule::Target { allow: &[] };
        let e = dial_resolved(
            "jira.acme.internal",
            443,
            &list,
            deadline,
            rule,
            blackhole(log.clone()),
        )
        .await
        .unwrap_err();
        assert!(AddressRefused::of(&e).is_none(), "{e}");
        let dialed: Vec<SocketAddr> = log.lock().unwrap().iter().map(|(a, _)| *a).collect();
        assert_eq!(dialed, [list[1]], "the loopback answer was never dialed");
    }

    #[tokio::test]
    async fn connect_any_reaches_a_listener_and_names_its_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rule = Rule::Target { allow: &[] };
        let (_, addr) = connect_any("127.0.0.1", port, Duration::from_secs(5), rule)
            .await
            .unwrap();
        assert_eq!(addr, listener.local_addr().unwrap());
    }
}
