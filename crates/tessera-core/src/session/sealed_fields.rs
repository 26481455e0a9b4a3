//! Protected fields on the session's side: decrypted once when the session is loaded (the
//! handler and `st.data` see plain values), encrypted when written (under the current key, for
//! the storage key the value is written to), re-encrypted when a login moves the session to a
//! new id (the storage key is bound into each value).

use super::state::State;
use super::Session;
use crate::error::{Error, Result};
use crate::field_crypto::{FieldKeys, Unreadable};
use crate::SessionConfig;
use std::collections::HashMap;

/// Decrypts the protected fields of `data`, stored for `member`, in place. What does not
/// decrypt is removed from `data` and returned (field, reason), unless the app chose to read
/// it as absent.
pub(crate) fn unseal(
    config: &SessionConfig,
    member: &str,
    data: &mut HashMap<String, Vec<u8>>,
) -> Vec<(String, Unreadable)> {
    let Some(keys) = &config.field_keys else {
        return Vec::new();
    };
    let mut unreadable = Vec::new();
    for field in &config.protected {
        let Some(stored) = data.get(field) else {
            continue;
        };
        match keys.open(field, member, stored) {
            Ok((plain, _previous_key)) => {
                data.insert(field.clone(), plain);
            }
            Err(why) => {
                data.remove(field);
                tracing::warn!(%field, reason = %why, absent = config.undecryptable_as_absent, "a protected session field does not decrypt");
                if !config.undecryptable_as_absent {
                    unreadable.push((field.clone(), why));
                }
            }
        }
    }
    unreadable
}

/// The stored form of `value` for `field` of the session stored under `member`: encrypted if
/// the field is protected.
pub(crate) fn seal<'a>(
    keys: Option<&FieldKeys>,
    config: &SessionConfig,
    member: &str,
    field: &str,
    value: &'a str,
) -> std::borrow::Cow<'a, str> {
    match keys {
        Some(k) if config.is_protected(field) => k.seal(field, member, value.as_bytes()).into(),
        _ => value.into(),
    }
}

impl Session {
    /// After a load: decrypt the protected fields in `st.data`.
    pub(super) fn unseal_loaded(&self, st: &mut State, member: &str) {
        st.unreadable.clear();
        let config = &self.mgr().inner.config;
        // Only a session holding a protected field is changed (its fields may be shared with
        // the near-cache).
        if config.field_keys.is_none() || !config.protected.iter().any(|f| st.data.contains_key(f))
        {
            return;
        }
        for (field, reason) in unseal(config, member, st.data_mut()) {
            st.unreadable.insert(field, reason);
        }
    }

    /// Before a login or an id rotation carries the session to a new id: a protected value
    /// written under a key this instance does not have cannot be carried (each value is bound
    /// to its storage key, so a copy could never be decrypted again, not even by an instance
    /// with the key). The rotation is refused, nothing changed: an instance with the key, or
    /// this one given it as a previous key, can do it. (A value that does not authenticate
    /// under a known key is unreadable everywhere already, and is carried as it is.)
    pub(super) fn check_carried(st: &State) -> Result<()> {
        let mut unknown: Vec<&String> = st
            .unreadable
            .iter()
            .filter(|(_, why)| **why == Unreadable::UnknownKey)
            .map(|(f, _)| f)
            .collect();
        unknown.sort();
        match unknown.first() {
            Some(field) => Err(Error::Undecryptable {
                field: field.to_string(),
                reason: format!(
                    "{}; the session cannot move to a new id here",
                    Unreadable::UnknownKey
                ),
            }),
            None => Ok(()),
        }
    }

    /// A protected field that did not decrypt is an error when read.
    pub(super) fn check_readable(st: &State, field: &str) -> Result<()> {
        match st.unreadable.get(field) {
            Some(reason) => Err(Error::Undecryptable {
                field: field.to_string(),
                reason: reason.to_string(),
            }),
            None => Ok(()),
        }
    }
}
