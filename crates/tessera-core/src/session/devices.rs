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

/// One of a user's sessions, as shown in a device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    /// Opaque handle for [`SessionManager::revoke`](super::SessionManager::revoke) (not the session id).
    pub handle: String,
    /// When the session was created.
    pub created_at: std::time::SystemTime,
    /// Its last TTL refresh (at touch-interval granularity).
    pub last_seen: std::time::SystemTime,
    /// The `User-Agent` recorded at login.
    pub user_agent: Option<String>,
    /// The client address recorded at login.
    pub client_addr: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
    /// The session's last recorded action, when device lists show it
    /// ([`SessionConfigBuilder::device_last_action`](crate::SessionConfigBuilder::device_last_action)).
    pub last_action: Option<super::Activity>,
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

impl DeviceSession {
    /// As JSON: `{"handle", "created_at", "last_seen" (RFC 3339), "user_agent", "client_addr",
    /// "current"}`, and `"last_action": {"at", "action"}` when device lists show it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "handle": self.handle,
            "created_at": rfc3339(self.created_at),
            "last_seen": rfc3339(self.last_seen),
            "user_agent": self.user_agent,
            "client_addr": self.client_addr,
            "current": self.current,
        });
        if let Some(a) = &self.last_action {
            v["last_action"] = a.to_json();
        }
        v
    }
}
