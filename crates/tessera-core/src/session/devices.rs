//! What a device list shows: one of a user's sessions, its opaque handle, and what the adapter
//! knows about the client.

use crate::error::{Error, Result};
use std::time::Duration;

/// A stored time (ms since the Unix epoch, as text) as a `SystemTime`, if it is one that can be
/// shown: from the epoch to the end of year 9999.
pub(crate) fn time_of_ms(text: &str) -> Option<std::time::SystemTime> {
    const MAX_MS: u64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms: u64 = text.trim().parse().ok()?;
    (ms <= MAX_MS).then(|| std::time::UNIX_EPOCH + Duration::from_millis(ms))
}

/// The longest user id accepted: ids are names of keys and index entries, not documents.
pub(super) const MAX_USER_ID_BYTES: usize = 512;

pub(super) fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(Error::InvalidUserId);
    }
    Ok(())
}

/// The opaque handle shown to clients for a session: derived one way from the storage key,
/// which is itself derived one way from the id, so a device list hands out nothing usable.
pub(super) fn handle_of(member: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tessera.handle\0");
    ctx.update(member.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..12])
}

/// What an adapter knows about the client of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client's address, as the app sees it.
    pub client_addr: Option<String>,
}

impl ClientInfo {
    /// From a raw `User-Agent` header (kept to 256 characters) and the peer address.
    pub fn new(user_agent: Option<&[u8]>, client_addr: Option<std::net::IpAddr>) -> Self {
        ClientInfo {
            user_agent: user_agent
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(|s| s.chars().take(256).collect()),
            client_addr: client_addr.map(|a| a.to_string()),
        }
    }

    /// As [`new`](Self::new), for an app behind `trusted_proxies` reverse proxies (load
    /// balancers) that each add the address they received the request from: the client is
    /// the address that many hops back from the app, read from `Forwarded` (RFC 7239, its
    /// `for=` parameters) or, when there is no `Forwarded` header, from `X-Forwarded-For`.
    /// Addresses further left were written by the client itself and are never trusted; with
    /// fewer hops than proxies, the furthest one there is counts. `0` proxies: the peer. A hop
    /// that is not an IP address (`unknown`, an obfuscated name) gives no address.
    ///
    /// ```
    /// use tessera_core::ClientInfo;
    /// let peer = Some("10.0.0.2".parse().unwrap()); // the load balancer
    /// let xff = [b"6.6.6.6, 203.0.113.7".as_slice()]; // spoofed by the client, then added by the proxy
    /// let c = ClientInfo::behind_proxies(None, peer, [], xff, 1);
    /// assert_eq!(c.client_addr.as_deref(), Some("203.0.113.7"));
    /// ```
    pub fn behind_proxies<'a>(
        user_agent: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
        forwarded: impl IntoIterator<Item = &'a [u8]>,
        x_forwarded_for: impl IntoIterator<Item = &'a [u8]>,
        trusted_proxies: usize,
    ) -> Self {
        let mut info = Self::new(user_agent, peer);
        if trusted_proxies == 0 {
            return info;
        }
        let mut hops = forwarded_for(forwarded);
        if hops.is_empty() {
            hops = x_forwarded_for
                .into_iter()
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(','))
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
        }
        if hops.len() > MAX_HOPS {
            hops.drain(..hops.len() - MAX_HOPS);
        }
        if hops.is_empty() {
            return info;
        }
        // [peer, the hop before it, ...]: the client is `trusted_proxies` steps back, or the
        // furthest hop there is.
        let back = trusted_proxies.min(hops.len());
        let hop = &hops[hops.len() - back];
        info.client_addr = parse_hop(hop).map(|a| a.to_string());
        info
    }
}

/// The most forwarding hops read from a request's headers (the rest, furthest from the app,
/// could only matter behind more proxies than anyone runs).
const MAX_HOPS: usize = 64;

/// The `for=` values of `Forwarded` headers, in order (RFC 7239: elements separated by `,`,
/// parameters by `;`, values possibly quoted).
fn forwarded_for<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut out = Vec::new();
    for h in headers {
        let Ok(h) = std::str::from_utf8(h) else {
            continue;
        };
        for element in h.split(',') {
            let value = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| v.trim().trim_matches('"').to_string())
            });
            // An element without `for=` is still a hop.
            out.push(value.unwrap_or_default());
        }
    }
    if out.len() > MAX_HOPS {
        out.drain(..out.len() - MAX_HOPS);
    }
    out
}

/// An address as a proxy wrote it: `192.0.2.60`, `192.0.2.60:8080`, `[2001:db8::17]:4711`,
/// `2001:db8::17`.
fn parse_hop(hop: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(Into::into)
}

#[cfg(test)]
mod forwarding_tests {
    use super::ClientInfo;

    fn client(fwd: &[&str], xff: &[&str], n: usize) -> Option<String> {
        let peer = Some("10.0.0.1".parse().unwrap());
        ClientInfo::behind_proxies(
            None,
            peer,
            fwd.iter().map(|s| s.as_bytes()),
            xff.iter().map(|s| s.as_bytes()),
            n,
        )
        .client_addr
    }

    #[test]
    fn no_trusted_proxy_is_the_peer_whatever_the_headers_say() {
        assert_eq!(client(&[], &["1.2.3.4"], 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            client(&["for=1.2.3.4"], &[], 0).as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn the_hop_that_many_proxies_back() {
        // The client sent "6.6.6.6" itself; proxy 2 added the client's real address, proxy 1
        // (the peer) added proxy 2's.
        let xff = ["6.6.6.6, 203.0.113.7", "10.0.0.9"];
        assert_eq!(client(&[], &xff, 1).as_deref(), Some("10.0.0.9"));
        assert_eq!(client(&[], &xff, 2).as_deref(), Some("203.0.113.7"));
        assert_eq!(client(&[], &xff, 3).as_deref(), Some("6.6.6.6"));
        assert_eq!(
            client(&[], &xff, 9).as_deref(),
            Some("6.6.6.6"),
            "the furthest there is"
        );
        assert_eq!(
            client(&[], &[], 1).as_deref(),
            Some("10.0.0.1"),
            "no header: the peer"
        );
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let fwd = [
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#,
            "for=192.0.2.60:8080;by=10.0.0.1",
        ];
        assert_eq!(client(&fwd, &["9.9.9.9"], 1).as_deref(), Some("192.0.2.60"));
        assert_eq!(
            client(&fwd, &["9.9.9.9"], 2).as_deref(),
            Some("2001:db8:cafe::17")
        );
        assert_eq!(client(&["FOR=unknown"], &[], 1), None, "not an address");
        assert_eq!(client(&["by=10.0.0.1"], &[], 1), None, "a hop without for=");
        assert_eq!(client(&["for=_hidden"], &[], 1), None);
    }

    #[test]
    fn garbage_gives_no_address_and_no_panic() {
        for junk in [
            "",
            ",,,",
            "[",
            "[::1",
            "1.2.3.4:99999",
            ":::",
            "for=\"",
            "\u{0}",
        ] {
            let _ = client(&[junk], &[junk], 1);
            let _ = client(&[], &[junk], 2);
        }
        assert_eq!(client(&[], &["not-an-ip"], 1), None);
        assert_eq!(
            client(&[], &[" 2001:db8::1 "], 1).as_deref(),
            Some("2001:db8::1")
        );
    }
}

/// One of a user's sessions, as shown in a device list. Serializes as `{"handle",
/// "created_at", "last_seen" (RFC 3339), "user_agent", "client_addr", "current"}`, and
/// `"last_action": {"at", "action"}` when device lists show it.
///
/// ```
/// # let d = tessera_core::DeviceSession { handle: "h".into(), created_at: std::time::UNIX_EPOCH, last_seen: std::time::UNIX_EPOCH, user_agent: None, client_addr: None, current: true, last_action: None };
/// let json = serde_json::to_value(&d).unwrap();
/// assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceSession {
    /// Opaque handle for [`SessionManager::revoke`](super::SessionManager::revoke) (not the session id).
    pub handle: String,
    /// When the session was created.
    #[serde(serialize_with = "rfc3339_ser")]
    pub created_at: std::time::SystemTime,
    /// Its last TTL refresh (at touch-interval granularity).
    #[serde(serialize_with = "rfc3339_ser")]
    pub last_seen: std::time::SystemTime,
    /// The `User-Agent` recorded at login.
    pub user_agent: Option<String>,
    /// The client address recorded at login.
    pub client_addr: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
    /// The session's last recorded action, when device lists show it
    /// ([`SessionConfigBuilder::device_last_action`](crate::SessionConfigBuilder::device_last_action)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_action: Option<super::Activity>,
}

/// Serializes a time as RFC 3339 text (empty if it cannot be shown).
pub(crate) fn rfc3339_ser<S: serde::Serializer>(
    t: &std::time::SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// A time as RFC 3339 text (empty if it cannot be shown).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let nanos = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
