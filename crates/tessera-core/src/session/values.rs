//! The field API of [`Session`]: read, set (with or without a lifetime), remove and list user
//! fields, and what the session knows of itself (stored, user, creation time). Each call
//! changes the request's state only; [`save.rs`](super::save) writes it.

use super::state::{is_user_field, user_of, State, Status};
use super::{check_field, time_of_ms, Session, MAX_FIELD_LIFETIME};
use crate::codec;
use crate::error::{Error, Result};
use crate::store::fields;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

impl Session {
    /// The value of a user field, decoded as `T`; `None` if absent.
    ///
    /// A field that does not decode as `T` (say, written by another application) is
    /// [`Error::Decode`], never a panic.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("theme", "dark").await?;
    /// let theme: Option<String> = session.get("theme").await?;
    /// assert_eq!(theme.as_deref(), Some("dark"));
    /// assert_eq!(session.get::<u32>("visits").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Self::check_readable(&st, field)?;
        st.data
            .get(field)
            .map(|raw| codec::decode(field, raw))
            .transpose()
    }

    /// Sets a user field (written at the end of the request, with the other changes). The
    /// value is anything [`Serialize`], by value or by reference (`insert("n", 1)`,
    /// `insert("user", &user)`).
    ///
    /// A value over `max_value_bytes`, or a new field beyond `max_fields`, is
    /// [`Error::TooLarge`] and changes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Cart { items: Vec<String> }
    ///
    /// session.insert("visits", 1).await?;
    /// let cart = Cart { items: vec!["p-17".into()] };
    /// session.insert("cart", &cart).await?;
    /// assert_eq!(session.get::<Cart>("cart").await?, Some(cart));
    /// # Ok(()) }
    /// ```
    pub async fn insert<T: Serialize>(&self, field: &str, value: T) -> Result<()> {
        self.insert_with(field, &value, None).await
    }

    /// `insert`, with a lifetime in ms or none, under one lock.
    async fn insert_with<T: Serialize + ?Sized>(
        &self,
        field: &str,
        value: &T,
        lifetime_ms: Option<u64>,
    ) -> Result<()> {
        check_field(field)?;
        let encoded = codec::encode(value)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.check_size(&st, field, encoded.len())?;
        self.check_index_terms(&st, field, encoded.as_bytes())?;
        self.note_index_change(&mut st, field);
        st.unreadable.remove(field);
        Self::clear_lifetime(&mut st, field);
        if let Some(ms) = lifetime_ms {
            // The new stamp replaces whatever is there.
            st.dirty.remove(&fields::stamp_of(field));
            st.expire.insert(field.to_string(), ms);
        }
        st.data_mut()
            .insert(field.to_string(), encoded.clone().into_bytes());
        st.dirty.insert(field.to_string(), Some(encoded));
        Ok(())
    }

    /// Removes a user field and returns what it held, decoded as `T` (`None` if absent).
    /// A value that does not decode as `T` is [`Error::Decode`] and nothing is removed; a
    /// protected value that does not decrypt is removed and reads as `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("cart", &vec!["p-17"]).await?;
    /// let cart: Option<Vec<String>> = session.remove("cart").await?;
    /// assert_eq!(cart, Some(vec!["p-17".to_string()]));
    /// assert_eq!(session.remove::<Vec<String>>("cart").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let old = match st.data.get(field) {
            Some(raw) => Some(codec::decode::<T>(field, raw)?),
            None => None,
        };
        self.remove_locked(&mut st, field);
        Ok(old)
    }

    /// [`remove`](Session::remove), returning the old value as JSON (never a decode error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("flash", "Profile saved").await?;
    /// // Shown once: read and removed in one call, whatever its type.
    /// let flash = session.remove_value("flash").await?;
    /// assert_eq!(flash.unwrap(), "Profile saved");
    /// assert_eq!(session.remove_value("flash").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn remove_value(&self, field: &str) -> Result<Option<serde_json::Value>> {
        self.remove::<serde_json::Value>(field).await
    }

    /// Removes every user field and keeps the session: its id, cookie and login stay (to end
    /// it, [`destroy`](Session::destroy); to start anew for another user,
    /// [`login`](Session::login) does that). Saved with the request's other changes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// session.insert("cart", ["p-17"]).await?;
    /// session.clear().await?;
    /// assert!(session.is_empty().await?);
    /// assert_eq!(session.user_id().await?.as_deref(), Some("ada")); // still logged in
    /// # Ok(()) }
    /// ```
    pub async fn clear(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let fields: Vec<String> = st
            .data
            .keys()
            .chain(st.unreadable.keys())
            .chain(st.dirty.keys())
            .filter(|k| is_user_field(k))
            .cloned()
            .collect();
        for f in fields {
            self.remove_locked(&mut st, &f);
        }
        Ok(())
    }

    fn remove_locked(&self, st: &mut State, field: &str) {
        self.note_index_change(st, field);
        Self::clear_lifetime(st, field);
        st.remove_data(field);
        st.unreadable.remove(field);
        if st.status == Status::Stored {
            st.dirty.insert(field.to_string(), None);
        } else {
            st.dirty.remove(field);
        }
    }

    /// Whether the session holds no user field (the user bound by a login, the CSRF token
    /// and the other reserved fields are not user fields; fields past their lifetime are gone).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// assert!(session.is_empty().await?);
    /// session.insert("theme", "dark").await?;
    /// assert!(!session.is_empty().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_empty(&self) -> Result<bool> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(!st.data.keys().any(|k| is_user_field(k)))
    }

    /// All user fields, each decoded as JSON (a plain-text field becomes a JSON string).
    ///
    /// A protected field whose stored value does not decrypt (a key change without the
    /// previous key, a copied or tampered value) is [`Error::Undecryptable`] naming it; to show
    /// the others and say which are unavailable, use
    /// [`readable_entries`](Session::readable_entries).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("theme", "dark").await?;
    /// session.insert("visits", 3).await?;
    /// let fields = session.entries().await?;
    /// assert_eq!(fields["theme"], "dark");
    /// assert_eq!(fields["visits"], 3);
    /// # Ok(()) }
    /// ```
    pub async fn entries(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        let (out, unreadable) = self.readable_entries_with_reasons().await?;
        match unreadable.into_iter().next() {
            Some((field, reason)) => Err(Error::Undecryptable { field, reason }),
            None => Ok(out),
        }
    }

    /// All user fields that can be read, each decoded as JSON, and the names (sorted) of the
    /// protected fields whose stored value does not decrypt, left out of the map: what a page
    /// shows when it must still render (the field as "unavailable", the logout forms working).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert("theme", "dark").await?;
    /// let (fields, unreadable) = session.readable_entries().await?;
    /// assert_eq!(fields["theme"], "dark");
    /// assert!(unreadable.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn readable_entries(
        &self,
    ) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<String>)> {
        let (out, unreadable) = self.readable_entries_with_reasons().await?;
        Ok((out, unreadable.into_iter().map(|(f, _)| f).collect()))
    }

    async fn readable_entries_with_reasons(
        &self,
    ) -> Result<(
        serde_json::Map<String, serde_json::Value>,
        Vec<(String, String)>,
    )> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let mut unreadable: Vec<(String, String)> = st
            .unreadable
            .iter()
            .map(|(f, r)| (f.clone(), r.to_string()))
            .collect();
        unreadable.sort();
        let mut out = serde_json::Map::new();
        let mut names: Vec<&String> = st.data.keys().filter(|k| is_user_field(k)).collect();
        names.sort();
        for k in names {
            let v = codec::decode_value(&st.data[k]).map_err(|e| Error::Decode {
                field: k.clone(),
                source: Arc::new(e),
            })?;
            out.insert(k.clone(), v);
        }
        Ok((out, unreadable))
    }

    /// Sets a user field that disappears after `ttl` while the session lives on (a cart, a
    /// step-up authentication flag). The lifetime never outlives the session; a login or an
    /// id rotation keeps what is left of it; writing the field again with
    /// [`insert`](Session::insert) makes it permanent again, with `insert_for` gives it a new
    /// lifetime; an [`increment`](Session::increment) keeps it. Where the server has hash-field
    /// expiry (Redis 7.4+, see [`Store::native_field_expiry`](crate::Store::native_field_expiry))
    /// the server removes the field on time; elsewhere the same happens through a stamp beside
    /// the field, checked whenever the session is read. A `ttl` under 1 ms is 1 ms; one over
    /// ten years is ten years (no session lives that long).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use std::time::Duration;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.insert_for("mfa_ok", &true, Duration::from_secs(15 * 60)).await?;
    /// let left = session.field_ttl("mfa_ok").await?.unwrap();
    /// assert!(left <= Duration::from_secs(15 * 60));
    /// # Ok(()) }
    /// ```
    pub async fn insert_for<T: Serialize>(
        &self,
        field: &str,
        value: T,
        ttl: std::time::Duration,
    ) -> Result<()> {
        let ms = (ttl.min(MAX_FIELD_LIFETIME).as_millis() as u64).max(1);
        self.insert_with(field, &value, Some(ms)).await
    }

    /// The remaining lifetime of a field given one with [`insert_for`](Session::insert_for);
    /// `None` for a field without a lifetime or absent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// # use std::time::Duration;
    /// session.insert_for("mfa_ok", true, Duration::from_secs(5 * 60)).await?;
    /// let left = session.field_ttl("mfa_ok").await?;
    /// assert!(left.is_some_and(|d| d <= Duration::from_secs(5 * 60)));
    /// session.insert("theme", "dark").await?;
    /// assert_eq!(session.field_ttl("theme").await?, None); // no lifetime
    /// # Ok(()) }
    /// ```
    pub async fn field_ttl(&self, field: &str) -> Result<Option<std::time::Duration>> {
        check_field(field)?;
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        if !st.data.contains_key(field) {
            return Ok(None);
        }
        if let Some(ms) = st.expire.get(field) {
            return Ok(Some(std::time::Duration::from_millis(*ms)));
        }
        let Some(at) = fields::ms(&st.data, &fields::stamp_of(field)) else {
            return Ok(None);
        };
        let now = self
            .store()
            .server_now()
            .unwrap_or_else(crate::store::now_ms);
        Ok(Some(std::time::Duration::from_millis(
            at.saturating_sub(now),
        )))
    }

    /// A field written without a lifetime (or removed) loses the one it had, including a stamp
    /// left in the store by a lifetime that has passed.
    fn clear_lifetime(st: &mut State, field: &str) {
        st.expire.remove(field);
        let stamp = fields::stamp_of(field);
        let stale = st.stale_stamps.remove(&stamp);
        if st.remove_data(&stamp).is_some() || stale {
            st.dirty.insert(stamp, None);
        }
    }

    /// The user bound by [`login`](Session::login), if any.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// assert_eq!(session.user_id().await?, None); // anonymous
    /// session.login(42).await?;
    /// assert_eq!(session.user_id().await?.as_deref(), Some("42"));
    /// # Ok(()) }
    /// ```
    pub async fn user_id(&self) -> Result<Option<String>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(user_of(&st.data))
    }

    /// Whether the session exists in the store (after loading it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// assert!(!session.is_stored().await?); // a first visit: nothing stored yet
    /// session.insert("theme", "dark").await?;
    /// session.save().await?;
    /// assert!(session.is_stored().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_stored(&self) -> Result<bool> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.status == Status::Stored)
    }

    /// Creation time, for a stored session (`None` also when the stored value is not a
    /// valid time: stored data is never trusted to be well formed). The store stamps it when
    /// it creates the session, so the request that creates it (a first save, a login) still
    /// reads `None`; the requests after it read the time.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tessera_core::Error> {
    /// # use tessera_core::adapter::SessionExt as _;
    /// # let manager = tessera_core::SessionManager::new(tessera_core::Store::memory(), tessera_core::SessionConfig::builder(tessera_core::Key::generate()).build().unwrap());
    /// # let session = manager.start(None::<&str>);
    /// session.login("ada").await?;
    /// # let cookie = session.finish(200).await.set_cookie.unwrap();
    /// # let session = manager.start([cookie.split(';').next().unwrap()]);
    /// // A later request, the account page: "signed in since ..."
    /// let since = session.created_at().await?.unwrap();
    /// assert!(since <= std::time::SystemTime::now());
    /// # Ok(()) }
    /// ```
    pub async fn created_at(&self) -> Result<Option<std::time::SystemTime>> {
        let mut st = self.inner.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st
            .data
            .get(fields::CREATED)
            .and_then(|v| time_of_ms(std::str::from_utf8(v).ok()?)))
    }
}
