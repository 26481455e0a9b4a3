//! [`Loaded`]: what a [`Records::load`](super::Records::load) returned, in brief (a digest per
//! field), so that a [`Records::save`](super::Records::save) writes only what its request
//! changed.

use serde_json::Value;
use std::collections::BTreeMap;

/// What a [`Records::load`](crate::adapter::Records::load) returned, in brief: a digest of each field's value (64 bits of
/// SHA-256 of its stored text, never the value), and a random name for this load.
/// [`Records::save`](crate::adapter::Records::save) given it writes the fields whose value differs from the digest and
/// deletes those it lists that the new values no longer hold; fields it does not list (added
/// by another request since) are left alone. It holds for one save: the session remembers the
/// last loads whose view a save used, and a second save with the same view (a copy of the
/// record kept by a cache, such as tower-sessions' `CachingSessionStore`, given to every later
/// request) replaces every value instead, since that view no longer says what this session's
/// own earlier saves added. Carried between the load and the save of one request as a JSON
/// value ([`to_value`](Self::to_value), [`from_value`](Self::from_value)), for a framework
/// that gives the store nothing but the record back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub(super) digests: BTreeMap<String, String>,
    /// Names this load (base64url of 96 random bits); empty for a `Default` one, whose
    /// reuse is not detected.
    pub(super) nonce: String,
}

impl Loaded {
    pub(super) fn digest(encoded: &str) -> String {
        use base64::Engine as _;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tessera.loaded\0");
        ctx.update(encoded.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..8])
    }

    pub(super) fn new(digests: BTreeMap<String, String>) -> Self {
        use base64::Engine as _;
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::id::random_bytes::<12>());
        Loaded { digests, nonce }
    }

    /// Whether `encoded` (a value's stored text) is what `field` held when loaded.
    pub(super) fn unchanged(&self, field: &str, encoded: &str) -> bool {
        self.digests
            .get(field)
            .is_some_and(|d| *d == Self::digest(encoded))
    }

    /// As a JSON object: `{"n": name of the load, "d": {field name: digest}}`.
    pub fn to_value(&self) -> Value {
        let digests = self
            .digests
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        serde_json::json!({"n": self.nonce, "d": Value::Object(digests)})
    }

    /// From [`to_value`](Self::to_value)'s output; `None` for anything else.
    pub fn from_value(v: &Value) -> Option<Self> {
        let nonce = v.get("n")?.as_str()?;
        // A name that could not have been written to the session's list of saved loads.
        if nonce.len() > 64
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let mut digests = BTreeMap::new();
        for (k, v) in v.get("d")?.as_object()? {
            digests.insert(k.clone(), v.as_str()?.to_string());
        }
        Some(Loaded {
            digests,
            nonce: nonce.to_string(),
        })
    }
}

/// How many loads' names a session remembers as used by a save ([`fields::SAVED_LOADS`]):
/// as many copies of one record as caches hold it (one per instance) are told stale.
pub(super) const SAVED_LOADS_KEPT: usize = 16;
