//! The activity trail: what a session did, newest first, bounded, stored in the session's own
//! hash (field `__a`), so it lives, moves and dies with the session.
//!
//! One field rather than a sorted set beside the session: a second key would sit in another
//! Cluster slot (session keys carry no hash tag, and adding one would change every key, logging
//! everyone out on the deploy), so it could not be written, expired or deleted in the same
//! atomic step as the session, and a record racing a logout could outlive it. In the hash, the
//! write script appends (server time, oldest entries dropped past the bound) in the same
//! round trip as the request's other changes, the session's TTL covers it, and every way a
//! session ends takes it along.

use super::devices::time_of_ms;
use super::Session;
use crate::error::{Error, Result};
use crate::store::fields;

use std::time::SystemTime;

/// One entry of a session's activity trail. Serializes as `{"at": RFC 3339, "action": ".."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    /// When it was saved, by the store's clock.
    #[serde(serialize_with = "super::devices::rfc3339_ser")]
    pub at: SystemTime,
    /// What the app recorded.
    pub action: String,
}

/// The entries of a stored trail (`<ms> <action>` lines, oldest first), newest first; lines
/// that do not parse are left out (stored data is untrusted).
pub(crate) fn parse(stored: &[u8]) -> Vec<Activity> {
    let text = String::from_utf8_lossy(stored);
    let mut out: Vec<Activity> = text
        .split('\n')
        .filter_map(|line| {
            let (ms, action) = line.split_once(' ')?;
            Some(Activity {
                at: time_of_ms(ms)?,
                action: action.to_string(),
            })
        })
        .collect();
    out.reverse();
    out
}

impl Session {
    /// Appends `action` to this session's activity trail (saved with the request's other
    /// changes, in the same round trip; stamped with the store's clock when saved). The trail
    /// keeps the newest entries up to its bound
    /// ([`SessionConfigBuilder::activity_trail`](crate::SessionConfigBuilder::activity_trail)).
    /// Like any change, a record is not saved when the response is an error, unless
    /// [`save`](Session::save) was called.
    ///
    /// An empty action or one with control characters is [`Error::InvalidAction`]; one over
    /// the length bound is [`Error::TooLarge`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.record("viewed invoice 17").await?;
    /// session.save().await?;
    /// let trail = session.activity().await?;
    /// assert_eq!(trail[0].action, "viewed invoice 17");
    /// # Ok(()) }
    /// ```
    pub async fn record(&self, action: &str) -> Result<()> {
        let limits = self.mgr().inner.config.trail;
        if action.is_empty() || action.chars().any(char::is_control) {
            return Err(Error::InvalidAction);
        }
        if action.len() > limits.max_action_bytes {
            return Err(Error::TooLarge {
                what: "bytes in one activity action",
                limit: limits.max_action_bytes,
            });
        }
        // Not loaded here: a record rides the request's write (an increment's one-round-trip
        // script included); a request that only records loads at the end, then writes.
        let mut st = self.inner.state.lock().await;
        st.records.push(action.to_string());
        let excess = st.records.len().saturating_sub(limits.max_entries);
        st.records.drain(..excess);
        Ok(())
    }

    /// This session's activity trail, newest first (the actions recorded in this request and
    /// not saved yet come first, stamped with the store's clock as estimated now).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.record("changed password").await?;
    /// let trail = session.activity().await?;
    /// assert_eq!(trail[0].action, "changed password");
    /// # Ok(()) }
    /// ```
    pub async fn activity(&self) -> Result<Vec<Activity>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let now = self
            .store()
            .server_now()
            .unwrap_or_else(crate::store::now_ms);
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now);
        let mut out: Vec<Activity> = st
            .records
            .iter()
            .rev()
            .map(|a| Activity {
                at,
                action: a.clone(),
            })
            .collect();
        if let Some(stored) = st.data.get(fields::TRAIL) {
            out.extend(parse(stored));
        }
        out.truncate(self.mgr().inner.config.trail.max_entries);
        Ok(out)
    }
}

impl Session {
    /// After a write that appended this request's records: they join the loaded trail (stamped
    /// with the store's clock as estimated; the store's own stamps are read next time).
    pub(super) fn saved_records(&self, st: &mut super::state::State) {
        if st.records.is_empty() {
            return;
        }
        let now = self
            .store()
            .server_now()
            .unwrap_or_else(crate::store::now_ms);
        let mut lines: Vec<String> = st
            .data
            .get(fields::TRAIL)
            .map(|v| {
                String::from_utf8_lossy(v)
                    .split('\n')
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        lines.retain(|l| !l.is_empty());
        lines.extend(st.records.drain(..).map(|a| format!("{now} {a}")));
        let max = self.mgr().inner.config.trail.max_entries;
        let excess = lines.len().saturating_sub(max);
        lines.drain(..excess);
        st.data_mut()
            .insert(fields::TRAIL.to_string(), lines.join("\n").into_bytes());
    }
}
