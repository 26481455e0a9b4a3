//! The demos' logic, framework-neutral: `axum-demo` and `actix-demo` only parse the request,
//! call these, and turn the [`Reply`] into a response, so one client script works against
//! either.

pub mod admin_ui;
pub mod ui;

use serde_json::{json, Map, Value};
use std::time::Duration;
use tessera_core::adapter::endpoints::Reply;
use tessera_core::{
    Error, FieldKey, Key, Session, SessionConfig, SessionConfigBuilder, SessionManager, Store,
};

/// Reads `TESSERA_SECRET`, `COOKIE_SECURE`, `SESSION_IDLE_SECS`, `SESSION_TOUCH_SECS`,
/// `SESSION_REMEMBER_MAX_SECS` (the longest "remember me", default 30 days), `TRUSTED_PROXIES`
/// (how many reverse proxies add the client's address, default 0), `FORWARDED_HEADER`
/// (`x-forwarded-for`, the default, or `forwarded`).
pub fn config_from_env() -> Result<SessionConfig, String> {
    let key = match std::env::var("TESSERA_SECRET") {
        Ok(hex) if !hex.is_empty() => {
            Key::from_hex(&hex).map_err(|e| format!("TESSERA_SECRET: {e}"))?
        }
        _ => {
            tracing::warn!("TESSERA_SECRET is not set: using a random signing key; sessions will not survive a restart or work across instances");
            Key::generate()
        }
    };
    let secs = |name: &str, default: u64| -> Result<Duration, String> {
        match std::env::var(name) {
            Ok(v) => v
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name} must be a whole number of seconds")),
            Err(_) => Ok(Duration::from_secs(default)),
        }
    };
    let idle = secs("SESSION_IDLE_SECS", 30 * 60)?;
    let touch = secs(
        "SESSION_TOUCH_SECS",
        60.min(idle.as_secs().saturating_sub(1)),
    )?;
    let remember_max = secs("SESSION_REMEMBER_MAX_SECS", 30 * 86_400)?.max(idle);
    let proxies = match std::env::var("TRUSTED_PROXIES") {
        Ok(v) => v
            .parse::<usize>()
            .map_err(|_| "TRUSTED_PROXIES must be a whole number".to_string())?,
        Err(_) => 0,
    };
    let forwarded_header = match std::env::var("FORWARDED_HEADER").as_deref() {
        Err(_) | Ok("x-forwarded-for") => tessera_core::ForwardedHeader::XForwardedFor,
        Ok("forwarded") => tessera_core::ForwardedHeader::Forwarded,
        Ok(other) => {
            return Err(format!(
                "FORWARDED_HEADER must be x-forwarded-for or forwarded, not {other:?}"
            ))
        }
    };
    let secure = cookie_secure_from_env();
    let mut builder = observed(indexed(
        SessionConfig::builder(key)
            .idle_timeout(idle)
            .longest_expiry(remember_max)
            .trusted_proxies(proxies)
            .forwarded_header(forwarded_header)
            .touch_interval(touch)
            .secure(secure),
    ));
    builder = protected(builder, field_keys_from_env()?);
    builder.build().map_err(|e| e.to_string())
}

/// `COOKIE_SECURE`: cookies are `Secure` unless it is `0` (plain http on localhost).
pub fn cookie_secure_from_env() -> bool {
    std::env::var("COOKIE_SECURE")
        .map(|v| v != "0")
        .unwrap_or(true)
}

/// `TESSERA_FIELD_KEY` (hex, 32 bytes; unset: a random key and a warning) and
/// `TESSERA_FIELD_KEY_PREVIOUS` (optional): the keys of the protected fields.
pub fn field_keys_from_env() -> Result<(FieldKey, Option<FieldKey>), String> {
    let current = match std::env::var("TESSERA_FIELD_KEY") {
        Ok(hex) if !hex.is_empty() => {
            FieldKey::from_hex(&hex).map_err(|e| format!("TESSERA_FIELD_KEY: {e}"))?
        }
        _ => {
            tracing::warn!("TESSERA_FIELD_KEY is not set: using a random key for protected fields; what they hold is unreadable after a restart and on other instances");
            FieldKey::generate()
        }
    };
    let previous = match std::env::var("TESSERA_FIELD_KEY_PREVIOUS") {
        Ok(hex) if !hex.is_empty() => {
            Some(FieldKey::from_hex(&hex).map_err(|e| format!("TESSERA_FIELD_KEY_PREVIOUS: {e}"))?)
        }
        _ => None,
    };
    Ok((current, previous))
}

/// The demo's protected field, `api_token`, under these keys.
pub fn protected(
    builder: SessionConfigBuilder,
    (current, previous): (FieldKey, Option<FieldKey>),
) -> SessionConfigBuilder {
    let mut b = builder.protected_field("api_token").field_key(current);
    if let Some(p) = previous {
        b = b.previous_field_key(p);
    }
    b
}

/// The demo's indexed fields: `tenant` (one value) and `cart` (a JSON list of product ids,
/// each element indexed), for the `/admin/*` queries.
pub fn indexed(builder: SessionConfigBuilder) -> SessionConfigBuilder {
    builder.index_field("tenant").index_list_field("cart")
}

/// The demo's activity trail (device lists show each session's last action) and lifecycle
/// events (for `GET /admin/events`; expiries swept every 2 s).
pub fn observed(builder: SessionConfigBuilder) -> SessionConfigBuilder {
    builder
        .device_last_action(true)
        .lifecycle_events(true)
        .expiry_sweep_interval(Duration::from_secs(2))
}

/// `ADMIN_TOKEN`: enables the `/admin/*` routes (unset or empty: they answer 404).
pub fn admin_token_from_env() -> Option<String> {
    std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty())
}

/// Which admin route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /admin/sessions?FIELD=VALUE[&limit=N]`
    ListSessions,
    /// `DELETE /admin/sessions?FIELD=VALUE`
    EndSessions,
    /// `GET /admin/counts?field=FIELD`
    Counts,
    /// `GET /admin/events?after=CURSOR`
    Events,
}

/// Constant-time comparison of the presented bearer token with the configured one.
fn token_matches(expected: &str, authorization: Option<&[u8]>) -> bool {
    let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let expected = expected.as_bytes();
    let mut diff = (presented.len() != expected.len()) as u8;
    for (i, b) in expected.iter().enumerate() {
        diff |= b ^ presented.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Whether a request may use the admin routes: `404` without `ADMIN_TOKEN`, `401` without
/// its bearer token.
fn admin_allowed(admin_token: Option<&str>, authorization: Option<&[u8]>) -> Result<(), Reply> {
    let Some(expected) = admin_token else {
        return Err(Reply {
            status: 404,
            body: Some(json!({ "error": "not found" })),
            refusal: None,
        });
    };
    if !token_matches(expected, authorization) {
        return Err(Reply {
            status: 401,
            body: Some(json!({ "error": "admin token required" })),
            refusal: None,
        });
    }
    Ok(())
}

/// The process's Prometheus recorder: installed on first use (the `metrics` facade takes one
/// recorder per process), with tessera's metrics described and its `_seconds` histograms in
/// buckets from 100 µs to 2.5 s.
pub fn metrics_recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(tessera_core::metrics::USER_SESSIONS.into()),
                    &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0],
                )
            })
            .expect("the bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed in the demo");
        tessera_core::metrics::describe();
        // The exporter keeps histogram samples until an upkeep folds them into the buckets:
        // without one, they would grow with the traffic.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("a thread for the metrics upkeep");
        handle
    })
}

/// `GET /metrics`: the Prometheus text, behind the admin token like the `/admin/*` routes
/// (`404` without `ADMIN_TOKEN`, `401` without its bearer token).
pub fn metrics_text(
    admin_token: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<String, Reply> {
    admin_allowed(admin_token, authorization)?;
    Ok(metrics_recorder().render())
}

/// The content type of [`metrics_text`].
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/admin/*` routes: `admin_token` is the configured `ADMIN_TOKEN` (`None`: 404),
/// `authorization` the request's `Authorization` header (missing or wrong: 401), `query` the
/// decoded query string.
pub async fn admin(
    manager: &SessionManager,
    admin_token: Option<&str>,
    authorization: Option<&[u8]>,
    route: AdminRoute,
    query: &[(String, String)],
) -> Reply {
    if let Err(refused) = admin_allowed(admin_token, authorization) {
        return refused;
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    run(async {
        match route {
            AdminRoute::Events => {
                let page = manager.read_events(param("after"), 1000).await?;
                // The contract's types: an eviction by the device limit is a revoke here, with
                // its cause beside it.
                let events: Vec<Value> = page
                    .events
                    .iter()
                    .map(|e| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        if e.kind == tessera_core::EventKind::Evicted {
                            v["type"] = json!("revoked");
                            v["cause"] = json!("device_limit");
                        }
                        v
                    })
                    .collect();
                Ok(Reply::json(
                    json!({ "events": events, "cursor": page.cursor, "missed": page.missed }),
                ))
            }
            AdminRoute::Counts => {
                let Some(field) = param("field") else {
                    return Ok(bad_request("field=FIELD is required"));
                };
                let counts = manager.count_by_value(field).await?;
                Ok(Reply::json(json!(counts)))
            }
            AdminRoute::ListSessions | AdminRoute::EndSessions => {
                let mut filter = query.iter().filter(|(k, _)| k != "limit");
                let (Some((field, value)), None) = (filter.next(), filter.next()) else {
                    return Ok(bad_request("exactly one FIELD=VALUE is required"));
                };
                if route == AdminRoute::EndSessions {
                    let ended = manager.end_sessions(field, value).await?;
                    return Ok(Reply::json(json!({ "ended": ended })));
                }
                let limit = match param("limit").map(str::parse::<usize>) {
                    None => 100,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return Ok(bad_request("limit must be a whole number")),
                };
                let found = manager.find_sessions(field, value, 0, limit).await?;
                let sessions: Vec<Value> = found
                    .sessions
                    .into_iter()
                    .map(
                        |s| json!({ "handle": s.handle, "user_id": s.user_id, "fields": s.fields }),
                    )
                    .collect();
                Ok(Reply::json(
                    json!({ "count": found.count, "sessions": sessions }),
                ))
            }
        }
    })
    .await
}

/// The store: Redis when `REDIS_URL` is set, else in memory. `NEAR_CACHE=1` turns on the
/// near-cache (64 MiB) for Redis; `REPLICA_ACKS=n` makes every write wait for `n` replicas.
pub async fn store_from_env() -> Result<Store, String> {
    let near_cache = match std::env::var("NEAR_CACHE").as_deref() {
        Ok("1") => true,
        Ok("0") | Ok("") | Err(_) => false,
        Ok(other) => return Err(format!("NEAR_CACHE must be 0 or 1, not {other:?}")),
    };
    // Writes answered only once this many replicas have them (`RedisOptions::replica_acks`).
    let replica_acks = match std::env::var("REPLICA_ACKS").as_deref() {
        Ok("") | Err(_) => 0,
        Ok(n) => n
            .parse::<u32>()
            .map_err(|_| format!("REPLICA_ACKS must be a number of replicas, not {n:?}"))?,
    };
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let mut options = tessera_core::RedisOptions::default().replica_acks(replica_acks);
            if near_cache {
                options = options.near_cache(64 * 1024 * 1024);
            }
            Store::redis_with(&url, options).await.map_err(|e| {
                format!(
                    "REDIS_URL: cannot connect: {e} ({:?})",
                    std::error::Error::source(&e)
                )
            })
        }
        _ => Ok(Store::memory()),
    }
}

/// `PORT`, default 3000.
pub fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| "PORT must be a port number".to_string()),
        Err(_) => Ok(3000),
    }
}

fn bad_request(msg: impl Into<String>) -> Reply {
    Reply {
        status: 400,
        body: Some(json!({ "error": msg.into() })),
        refusal: None,
    }
}

fn object(body: Result<Value, String>) -> Result<Map<String, Value>, Reply> {
    match body {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("body must be a JSON object")),
        Err(e) => Err(bad_request(e)),
    }
}

async fn run(f: impl std::future::Future<Output = Result<Reply, Error>>) -> Reply {
    f.await.unwrap_or_else(|e| Reply::error(&e))
}

async fn all_fields(session: &Session) -> Result<Reply, Error> {
    Ok(Reply::json(Value::Object(session.entries().await?)))
}

/// `POST /login[?remember=SECS]` `{"user_id": "42", ...}`: stores the fields, binds the
/// user, rotates the id. `remember`: this session's own expiry ("remember me"): a persistent
/// cookie and store TTL of SECS seconds, or `0` for a browser-session cookie; without it, the
/// configured expiry. `body` is the parsed JSON, or why it did not parse.
pub async fn login(
    session: &Session,
    body: Result<Value, String>,
    remember: Option<&str>,
) -> Reply {
    let fields = match object(body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let expiry = match remember.map(str::parse::<u64>) {
        None => None,
        Some(Ok(0)) => Some(tessera_core::Expiry::BrowserSession),
        Some(Ok(secs)) => Some(tessera_core::Expiry::Persistent(Duration::from_secs(secs))),
        Some(Err(_)) => return bad_request("remember must be a whole number of seconds"),
    };
    // A string only: `42` and `"42"` would otherwise name the same user without saying so.
    let user = match fields.get("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return bad_request("user_id (a non-empty string) is required"),
    };
    run(async {
        for (k, v) in &fields {
            session.insert(k, v).await?;
        }
        // Before the login, which is written at once: an expiry refused (400) leaves the
        // request with nothing done, not logged in with an error answer.
        if let Some(e) = expiry {
            session.set_expiry(e).await?;
        }
        session.login(&user).await?;
        all_fields(session).await
    })
    .await
}

/// `GET /me`: all user fields; `401` without a session.
pub async fn me(session: &Session) -> Reply {
    run(async {
        if !session.is_stored().await? {
            return Ok(Reply {
                status: 401,
                body: Some(json!({ "error": "no session" })),
                refusal: None,
            });
        }
        all_fields(session).await
    })
    .await
}

/// `PUT /session[?ttl=SECS]` `{field: value, ...}`: sets fields (`null` removes one), returns
/// all. With `ttl`, the fields set here disappear after that many seconds while the session
/// lives on; without it, a field written again keeps no lifetime. `ttl` is the raw query
/// value, if any.
pub async fn put_session(
    session: &Session,
    body: Result<Value, String>,
    ttl: Option<&str>,
) -> Reply {
    let fields = match object(body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let ttl = match ttl.map(str::parse::<u64>) {
        None => None,
        Some(Ok(secs)) if secs > 0 => Some(Duration::from_secs(secs)),
        Some(_) => return bad_request("ttl must be a whole number of seconds, at least 1"),
    };
    run(async {
        for (k, v) in fields {
            match (v.is_null(), ttl) {
                (true, _) => {
                    session.remove_value(&k).await?;
                }
                (false, Some(ttl)) => session.insert_for(&k, &v, ttl).await?,
                (false, None) => session.insert(&k, &v).await?,
            }
        }
        all_fields(session).await
    })
    .await
}

/// `POST /activity` `{"action": ".."}`: appends to the session's activity trail (204).
pub async fn record_activity(session: &Session, body: Result<Value, String>) -> Reply {
    let fields = match object(body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(Value::String(action)) = fields.get("action") else {
        return bad_request("action (a string) is required");
    };
    run(async {
        session.record(action).await?;
        Ok(Reply::status(204))
    })
    .await
}

/// `GET /activity`: the session's trail, newest first (`[]` without a session).
pub async fn activity(session: &Session) -> Reply {
    run(async {
        let trail: Vec<Value> = session
            .activity()
            .await?
            .iter()
            .take(50)
            .map(|a| serde_json::to_value(a).unwrap_or_default())
            .collect();
        Ok(Reply::json(Value::Array(trail)))
    })
    .await
}

/// `GET /live`: how often the stream sends a heartbeat event.
pub const LIVE_HEARTBEAT: Duration = Duration::from_secs(5);

/// `GET /live`: the stream is for a stored session; without one, `401` (a store failure: its
/// answer).
pub async fn live_allowed(session: &Session) -> Result<(), Reply> {
    match session.is_stored().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Reply {
            status: 401,
            body: Some(json!({ "error": "no session" })),
            refusal: None,
        }),
        Err(e) => Err(Reply::error(&e)),
    }
}

/// `GET /live`: the heartbeats, one at once (the client knows the stream is open) and one
/// every [`LIVE_HEARTBEAT`]; each is the data `{"at": <ms since the epoch>}` of an event named
/// `heartbeat`. The adapters end the stream with the `ended` event when the session ends.
pub fn live_heartbeats() -> impl futures_util::Stream<Item = String> + Send + 'static {
    futures_util::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(LIVE_HEARTBEAT).await;
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Some((json!({ "at": at as u64 }).to_string(), false))
    })
}

/// `POST /counter`: atomic increment of `counter`.
pub async fn counter(session: &Session) -> Reply {
    run(async {
        Ok(Reply::json(
            json!({ "counter": session.increment("counter", 1).await? }),
        ))
    })
    .await
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
