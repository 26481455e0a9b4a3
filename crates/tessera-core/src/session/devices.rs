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

/// A user id: 1 to [`MAX_USER_ID_BYTES`] bytes, one whole tag for the query engine (no U+001F,
/// no white space at either end), so `@user_id:{<id>}` finds that user's sessions and no one
/// else's.
pub(super) fn check_user_id(user_id: &str) -> Result<()> {
    if user_id.is_empty()
        || user_id.len() > MAX_USER_ID_BYTES
        || !super::query_engine::is_whole_tag(user_id)
    {
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
                // One copy when it fits (256 bytes are at most 256 characters).
                .map(|s| match s.len() {
                    0..=256 => s.to_owned(),
                    _ => s.chars().take(256).collect(),
                }),
            client_addr: client_addr.map(|a| a.to_string()),
        }
    }

    /// As [`new`](Self::new), for an app behind `trusted_proxies` reverse proxies (load
    /// balancers) that each add the address they received the request from to `header`: the
    /// client is the address that many hops back from the app. Entries further back were
    /// written by the client itself and are never read; so is any header the proxies do not
    /// write (a client's own `Forwarded` behind proxies that write `X-Forwarded-For`). Fewer
    /// hops than proxies, a hop that is not an IP address (`unknown`, an obfuscated name) or a
    /// header entry that is not text (hops are counted on the raw bytes): no address. `0` proxies: the peer.
    ///
    /// ```
    /// use tessera_core::{adapter::ClientInfo, ForwardedHeader};
    /// let peer = Some("10.0.0.2".parse().unwrap()); // the load balancer
    /// let xff = [b"6.6.6.6, 203.0.113.7".as_slice()]; // spoofed by the client, then added by the proxy
    /// let c = ClientInfo::behind_proxies(None, peer, ForwardedHeader::XForwardedFor, xff, 1);
    /// assert_eq!(c.client_addr.as_deref(), Some("203.0.113.7"));
    /// ```
    pub fn behind_proxies<'a>(
        user_agent: Option<&[u8]>,
        peer: Option<std::net::IpAddr>,
        header: ForwardedHeader,
        values: impl IntoIterator<Item = &'a [u8]>,
        trusted_proxies: usize,
    ) -> Self {
        let mut info = Self::new(user_agent, peer);
        if trusted_proxies == 0 {
            return info;
        }
        info.client_addr = hop_back(header, values, trusted_proxies)
            .and_then(parse_hop)
            .map(|a| a.to_string());
        info
    }
}

/// Which header the reverse proxies in front of the app write the client's address to (see
/// [`SessionConfigBuilder::trusted_proxies`](crate::SessionConfigBuilder::trusted_proxies)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, Envoy, AWS, Google and Azure load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): its `for=` parameters.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// The entry `n` hops back (1 = the last one, written by the peer), reading the header lines
/// and their comma-separated entries from the end and stopping there: a long header costs no
/// more than `n` entries. Hops are counted on the raw bytes (`,` is ASCII, so a byte that is
/// not UTF-8 never hides a separator): an entry that is not UTF-8 is one hop with no address,
/// and never shifts the count to an entry the client wrote.
fn hop_back<'a>(
    header: ForwardedHeader,
    values: impl IntoIterator<Item = &'a [u8]>,
    n: usize,
) -> Option<&'a str> {
    let lines: Vec<&'a [u8]> = values.into_iter().collect();
    let element = lines
        .into_iter()
        .rev()
        .flat_map(|line| line.rsplit(|b| *b == b','))
        .nth(n.checked_sub(1)?)?;
    let element = std::str::from_utf8(element).ok()?;
    match header {
        ForwardedHeader::XForwardedFor => Some(element.trim()),
        ForwardedHeader::Forwarded => forwarded_for(element),
    }
}

/// The `for=` value of one `Forwarded` element (RFC 7239: parameters separated by `;`,
/// values possibly quoted).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
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
    use super::{ClientInfo, ForwardedHeader};

    fn client(header: ForwardedHeader, lines: &[&str], n: usize) -> Option<String> {
        let peer = Some("10.0.0.1".parse().unwrap());
        ClientInfo::behind_proxies(None, peer, header, lines.iter().map(|s| s.as_bytes()), n)
            .client_addr
    }
    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    #[test]
    fn no_trusted_proxy_is_the_peer_whatever_the_headers_say() {
        assert_eq!(client(XFF, &["1.2.3.4"], 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(
            client(FWD, &["for=1.2.3.4"], 0).as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn the_hop_that_many_proxies_back() {
        // The client sent "6.6.6.6" itself; proxy 2 added the client's real address, proxy 1
        // (the peer) added proxy 2's.
        let xff = ["6.6.6.6, 203.0.113.7", "10.0.0.9"];
        assert_eq!(client(XFF, &xff, 1).as_deref(), Some("10.0.0.9"));
        assert_eq!(client(XFF, &xff, 2).as_deref(), Some("203.0.113.7"));
        assert_eq!(
            client(XFF, &xff, 4),
            None,
            "fewer hops than proxies: no address"
        );
        assert_eq!(
            client(XFF, &[], 1),
            None,
            "no header behind a proxy: no address"
        );
    }

    #[test]
    fn forwarded_is_parsed_and_only_the_configured_header_counts() {
        let fwd = [
            r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#,
            "for=192.0.2.60:8080;by=10.0.0.1",
        ];
        assert_eq!(client(FWD, &fwd, 1).as_deref(), Some("192.0.2.60"));
        assert_eq!(client(FWD, &fwd, 2).as_deref(), Some("2001:db8:cafe::17"));
        assert_eq!(client(FWD, &["FOR=unknown"], 1), None, "not an address");
        assert_eq!(client(FWD, &["by=10.0.0.1"], 1), None, "a hop without for=");
        assert_eq!(client(FWD, &["for=_hidden"], 1), None);
        // A client's own Forwarded is not read behind proxies that write X-Forwarded-For.
        assert_eq!(client(XFF, &["9.9.9.9"], 1).as_deref(), Some("9.9.9.9"));
    }

    #[test]
    fn an_unreadable_line_is_a_hop_without_an_address() {
        let peer = Some("10.0.0.1".parse().unwrap());
        let lines: [&[u8]; 2] = [b"203.0.113.7", b"\xff\xfe"];
        let c = |n| ClientInfo::behind_proxies(None, peer, XFF, lines, n).client_addr;
        assert_eq!(
            c(1),
            None,
            "not text: no address, and no shift to a client-written one"
        );
        assert_eq!(c(2).as_deref(), Some("203.0.113.7"));
    }

    /// Issue #23 (16): a line with a byte that is not UTF-8 counted as one hop, whatever its
    /// commas: with two proxies, the count landed on an entry the client wrote.
    #[test]
    fn hops_are_counted_by_bytes_in_a_line_that_is_not_utf8() {
        let peer = Some("10.0.0.1".parse().unwrap());
        // The client wrote "6.6.6.6"; proxy 2 added the client's address (with a stray byte
        // after it, in its own entry), proxy 1 its own.
        let lines: [&[u8]; 2] = [b"6.6.6.6", b"203.0.113.7, \xff, 10.0.0.9"];
        let c = |n| ClientInfo::behind_proxies(None, peer, XFF, lines, n).client_addr;
        assert_eq!(c(1).as_deref(), Some("10.0.0.9"));
        assert_eq!(c(2), None, "the entry that is not text: no address");
        assert_eq!(c(3).as_deref(), Some("203.0.113.7"));
        assert_eq!(c(4).as_deref(), Some("6.6.6.6"));
        let fwd: [&[u8]; 1] = [b"for=6.6.6.6, for=\xff, for=192.0.2.60"];
        let f = |n| ClientInfo::behind_proxies(None, peer, FWD, fwd, n).client_addr;
        assert_eq!(f(1).as_deref(), Some("192.0.2.60"));
        assert_eq!(f(2), None);
        assert_eq!(f(3).as_deref(), Some("6.6.6.6"));
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
            let _ = client(FWD, &[junk], 1);
            let _ = client(XFF, &[junk], 2);
        }
        assert_eq!(client(XFF, &["not-an-ip"], 1), None);
        assert_eq!(
            client(XFF, &[" 2001:db8::1 "], 1).as_deref(),
            Some("2001:db8::1")
        );
        let long = format!("{}1.2.3.4", "9.9.9.9,".repeat(100_000));
        assert_eq!(client(XFF, &[&long], 1).as_deref(), Some("1.2.3.4"));
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
