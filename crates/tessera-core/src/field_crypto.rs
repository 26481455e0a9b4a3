//! Protected fields: values stored encrypted and authenticated (AES-256-GCM through `ring`),
//! with a fresh random nonce per write. The field name and the session's storage key are bound
//! in as associated data, so a ciphertext copied to another field or another session does not
//! decrypt. Stored as `enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, where the key
//! id (8 hex digits of a hash of the key) names the key that wrote it, so a previous key can
//! still read what it wrote while the current key writes everything new.

use crate::error::ConfigError;
use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use std::fmt;

const PREFIX: &str = "enc:v1:";

/// Whether a stored value has the form of a sealed one (read without any key).
pub(crate) fn looks_sealed(v: &[u8]) -> bool {
    v.starts_with(PREFIX.as_bytes())
}

/// A 32-byte AES-256-GCM key for protected fields
/// ([`SessionConfigBuilder::protected_field`](crate::SessionConfigBuilder::protected_field)).
///
/// ```
/// use tessera_core::FieldKey;
/// let key = FieldKey::from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff").unwrap();
/// assert!(FieldKey::from_hex("abcd").is_err()); // not 32 bytes
/// # let _ = (key, FieldKey::generate());
/// ```
#[derive(Clone)]
pub struct FieldKey {
    key: std::sync::Arc<LessSafeKey>,
    id: String,
}

impl fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldKey({})", self.id)
    }
}

impl FieldKey {
    /// A key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() != 32 {
            return Err(ConfigError::FieldKey("a field key is exactly 32 bytes"));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| ConfigError::FieldKey("not an AES-256 key"))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tessera.field-key\0");
        ctx.update(bytes);
        let digest = ctx.finish();
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(FieldKey {
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
            id,
        })
    }

    /// A key from 64 hex digits, as in the demo's `TESSERA_FIELD_KEY`.
    pub fn from_hex(hex: &str) -> Result<Self, ConfigError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::FieldKey(
                "a field key is 64 hex digits (32 bytes)",
            ));
        }
        let bytes: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
            .collect();
        Self::from_bytes(&bytes)
    }

    /// A random key: what it encrypts is unreadable once the process exits (tests, demos).
    pub fn generate() -> Self {
        Self::from_bytes(&crate::id::random_bytes::<32>()).expect("32 bytes")
    }

    /// The key's id as stored beside each value it encrypts (8 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Why a protected value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Not in the `enc:v1:` format (written before the field was protected, or by another app).
    NotEncrypted,
    /// Written under a key this app does not have.
    UnknownKey,
    /// The key is known but the value does not authenticate: tampered, or moved from another
    /// field or session.
    Tampered,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unreadable::NotEncrypted => "not encrypted",
            Unreadable::UnknownKey => "written under an unknown key",
            Unreadable::Tampered => {
                "does not authenticate (tampered, or moved from another field or session)"
            }
        })
    }
}

/// The current key and the previous ones.
#[derive(Debug, Clone)]
pub(crate) struct FieldKeys {
    pub(crate) current: FieldKey,
    pub(crate) previous: Vec<FieldKey>,
}

fn aad(field: &str, member: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + field.len() + member.len());
    a.extend_from_slice(b"tessera.field\0");
    a.extend_from_slice(field.as_bytes());
    a.push(0);
    a.extend_from_slice(member.as_bytes());
    a
}

impl FieldKeys {
    /// Encrypts `plain` for `field` of the session stored under `member`.
    pub(crate) fn seal(&self, field: &str, member: &str, plain: &[u8]) -> String {
        let nonce_bytes = crate::id::random_bytes::<NONCE_LEN>();
        let mut buf = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad(field, member)),
                &mut buf,
            )
            .expect("AES-GCM sealing does not fail for session-sized values");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Decrypts a stored value of `field` of the session stored under `member`; also says
    /// whether it was written under a previous key.
    pub(crate) fn open(
        &self,
        field: &str,
        member: &str,
        stored: &[u8],
    ) -> Result<(Vec<u8>, bool), Unreadable> {
        let text = std::str::from_utf8(stored).map_err(|_| Unreadable::NotEncrypted)?;
        let rest = text.strip_prefix(PREFIX).ok_or(Unreadable::NotEncrypted)?;
        let (id, body) = rest.split_once(':').ok_or(Unreadable::NotEncrypted)?;
        let (key, previous) = if id == self.current.id {
            (&self.current, false)
        } else {
            (
                self.previous
                    .iter()
                    .find(|k| k.id == id)
                    .ok_or(Unreadable::UnknownKey)?,
                true,
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Unreadable::Tampered)?;
        if raw.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(Unreadable::Tampered);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unreadable::Tampered)?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad(field, member)), &mut buf)
            .map_err(|_| Unreadable::Tampered)?;
        Ok((plain.to_vec(), previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> FieldKeys {
        FieldKeys {
            current: FieldKey::from_bytes(&[7; 32]).unwrap(),
            previous: vec![FieldKey::from_bytes(&[3; 32]).unwrap()],
        }
    }

    #[test]
    fn seal_then_open_and_the_bindings() {
        let k = keys();
        let a = k.seal("api_token", "m1", b"s3cret");
        let b = k.seal("api_token", "m1", b"s3cret");
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(a.starts_with(&format!("enc:v1:{}:", k.current.id())));
        assert!(!a.contains("s3cret"));
        assert_eq!(
            k.open("api_token", "m1", a.as_bytes()).unwrap(),
            (b"s3cret".to_vec(), false)
        );
        assert_eq!(
            k.open("other", "m1", a.as_bytes()),
            Err(Unreadable::Tampered)
        );
        assert_eq!(
            k.open("api_token", "m2", a.as_bytes()),
            Err(Unreadable::Tampered)
        );
        let mut t = a.clone().into_bytes();
        let last = t.len() - 3;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open("api_token", "m1", &t), Err(Unreadable::Tampered));
        assert_eq!(
            k.open("api_token", "m1", b"plain"),
            Err(Unreadable::NotEncrypted)
        );
        assert_eq!(
            k.open("api_token", "m1", b"enc:v1:zz:abc"),
            Err(Unreadable::UnknownKey)
        );
        assert_eq!(
            k.open("api_token", "m1", b"enc:v1:"),
            Err(Unreadable::NotEncrypted)
        );
    }

    #[test]
    fn a_previous_key_still_reads() {
        let old = FieldKeys {
            current: FieldKey::from_bytes(&[3; 32]).unwrap(),
            previous: vec![],
        };
        let sealed = old.seal("f", "m", b"v");
        assert_eq!(
            keys().open("f", "m", sealed.as_bytes()).unwrap(),
            (b"v".to_vec(), true)
        );
        let only_new = FieldKeys {
            current: FieldKey::from_bytes(&[7; 32]).unwrap(),
            previous: vec![],
        };
        assert_eq!(
            only_new.open("f", "m", sealed.as_bytes()),
            Err(Unreadable::UnknownKey)
        );
    }
}
