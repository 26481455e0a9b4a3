//! Session ids and the keys they map to in the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

/// Bytes of CSPRNG output in a session id (128 bits).
pub(crate) const ID_LEN: usize = 16;

/// A session id: 128 bits from the operating system's CSPRNG.
///
/// It only ever travels in the signed cookie. The store never sees it: keys are derived from
/// it by a one-way hash ([`SessionId::storage_key`]), so a leaked dump, replica or `KEYS`
/// listing hands out no live cookie. `Debug` prints only a short hash.
///
/// The storage key is derived once, when the id is made (a request uses it for the key, the
/// index member, sealing and log tags: one SHA-256 per id, not one per use).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionId {
    raw: [u8; ID_LEN],
    /// base64url of the first 16 bytes of SHA-256(raw): always ASCII.
    storage: [u8; STORAGE_LEN],
}

/// Characters of a storage key suffix: base64url (no padding) of 16 bytes.
const STORAGE_LEN: usize = 22;

impl SessionId {
    /// A fresh random id.
    pub(crate) fn generate() -> Self {
        let mut b = [0u8; ID_LEN];
        SystemRandom::new()
            .fill(&mut b)
            .expect("the operating system's random number generator failed");
        SessionId::from_bytes(b)
    }

    pub(crate) fn from_bytes(raw: [u8; ID_LEN]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
        let mut storage = [0u8; STORAGE_LEN];
        let n = URL_SAFE_NO_PAD
            .encode_slice(&digest.as_ref()[..16], &mut storage)
            .expect("16 bytes are 22 base64url characters");
        debug_assert_eq!(n, STORAGE_LEN);
        SessionId { raw, storage }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.raw
    }

    /// The storage key suffix: base64url of the first 16 bytes of SHA-256(id).
    pub(crate) fn storage_str(&self) -> &str {
        std::str::from_utf8(&self.storage).expect("base64url is ASCII")
    }

    /// [`storage_str`](Self::storage_str), owned.
    pub(crate) fn storage_key(&self) -> String {
        self.storage_str().to_owned()
    }

    /// A short, non-reversible tag for logs: the first 8 characters of the storage key, so an
    /// operator can match a log line to a key with `redis-cli --scan --pattern 'session:<tag>*'`.
    pub(crate) fn log_tag(&self) -> &str {
        &self.storage_str()[..8]
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", self.log_tag())
    }
}

/// A random value from the CSPRNG, base64url-encoded (used for signing keys in the demo).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator failed");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_keys_are_stable() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.storage_key(), a.clone().storage_key());
        assert_eq!(a.storage_key().len(), 22);
        assert!(!format!("{a:?}").contains(&URL_SAFE_NO_PAD.encode(a.as_bytes())));
    }
}
