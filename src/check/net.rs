//! Small network helpers the steps share: name resolution within a bound, and readable errors
//! and durations.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// Resolves `host` (an address is used as it is) within `timeout`; returns the addresses and a
/// line listing them.
pub async fn resolve(host: &str, timeout: Duration) -> Result<(Vec<IpAddr>, String), String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![ip], format!("{ip} is an address; nothing to look up")));
    }
    let lookup = tokio::net::lookup_host((host, 0));
    let addrs = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
        Err(_) => {
            return Err(format!(
                "DNS lookup for {host} got no answer within {}",
                secs(timeout)
            ));
        }
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err(format!("{host} resolved to no address"));
    }
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    Ok((ips.clone(), format!("resolves to {}", list.join(", "))))
}

/// An I/O error without the trailing "(os error N)".
pub fn io_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `2s`, `500ms`, `1.5s`.
pub fn secs(d: Duration) -> String {
    super::report::duration(d.as_millis() as u64)
}
