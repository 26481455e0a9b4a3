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
