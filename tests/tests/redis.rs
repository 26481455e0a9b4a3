//! What only a real server can show: the key layout, the exact commands per request, and
//! failures (server down, paused, restarted). Run against Redis 7, Redis 8.2 and Valkey 8.1.
//!
//! Over 500 lines on purpose: one self-contained case per server fact (each cost-table row is
//! its own case); the list at the top is the index.

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_core::adapter::SessionExt as _;
use tessera_core::{RedisOptions, SessionManager, Store};
use tessera_tests::fixture::config;
use tessera_tests::{Backend, Fixture, Server, ServerKind};

tessera_tests::per_backend!(
    [redis7, redis8, valkey] =>
    storage_layout_is_readable_with_redis_cli,
    typed_values_round_trip_exactly_through_the_server,
    cost_route_that_never_uses_the_session,
    cost_bad_cookie,
    cost_read_inside_the_touch_interval,
    cost_first_read_on_another_instance,
    cost_read_past_the_touch_interval,
    cost_read_then_write_two_fields,
    cost_increment,
    cost_logged_in_past_the_touch_interval,
    server_down_is_a_fast_503_and_recovers,
    paused_server_is_a_503_within_the_command_timeout,
    failed_save_is_not_reported_as_success,
    corrupt_data_from_another_app_is_a_typed_error,
    logs_carry_a_short_hash_never_the_id,
    user_index_operations_cost_o_of_the_users_sessions,
    increments_at_the_field_limit,
);

fn stats(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

mod cases {
    use super::*;

    pub async fn storage_layout_is_readable_with_redis_cli(kind: ServerKind) {
        let fx = Fixture::with(Backend::Redis(kind), |c| c.namespace("shop:")).await;
        let br = fx.browser();
        br.post(
            "/login",
            Some(json!({"user_id": "42", "tenant": "acme", "n": 3, "tags": ["a"]})),
        )
        .await;
        let s = fx.server();
        let keys = s.keys("*session*");
        assert_eq!(keys.len(), 2, "{keys:?}");
        let key = &s.keys("shop:session:*")[0];
        // The user index: a sorted set of the user's session key suffixes.
        let index = "shop:user:42:sessions";
        assert_eq!(s.text(&["TYPE", index]).as_deref(), Some("zset"));
        let member = &key["shop:session:".len()..];
        let bound: u64 = s
            .text(&["ZSCORE", index, member])
            .expect("the session is in its user's index")
            .parse()
            .unwrap();
        let index_ttl = s.cmd(&["PTTL", index]).int();
        assert!(
            index_ttl > 59 * 60 * 1000 && index_ttl <= 60 * 60 * 1000,
            "index lives as long as its highest bound (2 x idle): {index_ttl}"
        );
        assert!(bound > 1_700_000_000_000);
        let cookie = br.cookie("__Host-tessera").unwrap();
        assert!(key.starts_with("shop:session:"), "{key}");
        assert!(
            !key.contains(&cookie[..22]),
            "the key is a one-way hash, not the cookie id"
        );
        assert_eq!(key.len(), "shop:session:".len() + 22);
        assert_eq!(
            s.text(&["HGET", key, "tenant"]).as_deref(),
            Some("acme"),
            "plain text"
        );
        assert_eq!(s.text(&["HGET", key, "n"]).as_deref(), Some("3"));
        assert_eq!(s.text(&["HGET", key, "tags"]).as_deref(), Some(r#"["a"]"#));
        // A string that would read as JSON (a number here) is stored quoted, so it comes back
        // as a string, exactly; internal metadata is plain.
        assert_eq!(s.text(&["HGET", key, "user_id"]).as_deref(), Some("\"42\""));
        assert_eq!(s.text(&["HGET", key, "__u"]).as_deref(), Some("42"));
        let created: u64 = s.text(&["HGET", key, "__c"]).unwrap().parse().unwrap();
        let touched: u64 = s.text(&["HGET", key, "__t"]).unwrap().parse().unwrap();
        assert!(touched >= created && created > 1_700_000_000_000);
        let ttl = s.cmd(&["PTTL", key]).int();
        assert!(
            ttl > 29 * 60 * 1000 && ttl <= 30 * 60 * 1000,
            "idle TTL 30 min by default: {ttl}"
        );
        assert_eq!(s.text(&["TYPE", key]).as_deref(), Some("hash"));
    }

    pub async fn typed_values_round_trip_exactly_through_the_server(kind: ServerKind) {
        let server = Server::start(kind);
        let store = Store::redis(&server.url()).await.unwrap();
        let manager = SessionManager::new(store, config(|c| c));
        let mut values = vec![
            json!("acme"),
            json!(""),
            json!("42"),
            json!("\"quoted\""),
            json!("null"),
            json!(" true "),
            json!("ünïcödé ✓ 🚀"),
            json!("line\nbreak\ttab"),
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.1),
            json!(1e300),
            json!(-2.5e-308),
            json!(true),
            json!(null),
            json!([]),
            json!({}),
            json!({"nested": {"deep": [1, "two", null, {"x": false}]}}),
        ];
        // Pseudo-random strings over a nasty alphabet (seeded, so failures reproduce).
        let alphabet: Vec<char> = "a\"\\{}[]:, 0123456789.eE+-ntrufl\u{0}\u{7f}é😀"
            .chars()
            .collect();
        let mut seed: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..300 {
            let len = (seed % 12) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            values.push(json!(s));
        }
        let first = manager.start(None::<&str>);
        for (i, v) in values.iter().enumerate() {
            first.insert(&format!("f{i}"), v).await.unwrap();
        }
        first.insert("float", &0.1f64).await.unwrap();
        first
            .insert("tuple", &(1u8, "x".to_string(), Some(2.5f32)))
            .await
            .unwrap();
        let out = first.finish(200).await;
        assert!(out.error.is_none());
        let sc = out.set_cookie.unwrap();
        let pair = sc.split(';').next().unwrap();
        let second = manager.start([pair]);
        for (i, v) in values.iter().enumerate() {
            let back: serde_json::Value = second.get(&format!("f{i}")).await.unwrap().unwrap();
            assert_eq!(&back, v, "field f{i}");
        }
        assert_eq!(second.get::<f64>("float").await.unwrap(), Some(0.1));
        assert_eq!(
            second
                .get::<(u8, String, Option<f32>)>("tuple")
                .await
                .unwrap(),
            Some((1, "x".into(), Some(2.5)))
        );
    }

    /// A server with one anonymous session (touch interval 1 s), its browser, and the server.
    async fn one_session(kind: ServerKind) -> (Fixture, tessera_tests::Browser) {
        let fx = Fixture::with(Backend::Redis(kind), |c| {
            c.touch_interval(Duration::from_secs(1))
        })
        .await;
        let br = fx.browser();
        br.put("/session", json!({"tenant": "acme"})).await; // an anonymous session
        (fx, br)
    }

    // One case per row of ARCHITECTURE.md's "What a request costs" table.

    pub async fn cost_route_that_never_uses_the_session(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        s.reset_stats();
        assert_eq!(br.get("/noop").await.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[]),
            "a route that never touches the session sends nothing"
        );
    }

    pub async fn cost_bad_cookie(kind: ServerKind) {
        let (fx, _) = one_session(kind).await;
        let s = fx.server();
        let t = fx.browser();
        t.set_cookie("__Host-tessera", "garbage");
        s.reset_stats();
        assert_eq!(t.get("/me").await.status, 401);
        assert_eq!(s.command_stats(), stats(&[]), "a bad cookie costs nothing");
    }

    pub async fn cost_read_inside_the_touch_interval(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        s.reset_stats();
        assert_eq!(br.get("/me").await.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[("hgetall", 1)]),
            "read inside the touch interval, on an instance that saw the last refresh: one plain HGETALL"
        );
    }

    pub async fn cost_first_read_on_another_instance(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        // Another instance (behind the same load balancer) has not seen this session: its
        // first read is the refresh script, still one command and one round trip.
        let cold = fx
            .sibling(tessera_tests::fixture::config(|c| {
                c.touch_interval(Duration::from_secs(1))
            }))
            .await;
        let cold_br = br.pointed_at(&cold);
        s.reset_stats();
        assert_eq!(cold_br.get("/me").await.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[("evalsha", 1), ("hgetall", 1), ("time", 1)]),
            "cold instance, inside the interval"
        );
        s.reset_stats();
        assert_eq!(cold_br.get("/me").await.status, 200);
        assert_eq!(s.command_stats(), stats(&[("hgetall", 1)]), "now it knows");
    }

    pub async fn cost_read_past_the_touch_interval(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.reset_stats();
        let r = br.get("/me").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[("evalsha", 1), ("hgetall", 1), ("time", 1), ("hset", 1), ("pexpire", 1)]),
            "read past the touch interval: one command (the script), one round trip, and the TTL slides"
        );
        assert!(
            r.set_cookies.is_empty(),
            "browser-session cookie: nothing to re-send"
        );
    }

    pub async fn cost_read_then_write_two_fields(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        s.reset_stats();
        let r = br.put("/session", json!({"a": 1, "b": 2})).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[
                ("hgetall", 1),
                ("evalsha", 1),
                ("time", 1),
                ("hmget", 1),
                ("hset", 1)
            ]),
            "write of two fields: plain load + one write round trip (one HSET, no HDEL)"
        );
        s.reset_stats();
        br.put("/session", json!({"a": null})).await;
        let st = s.command_stats();
        assert_eq!(
            st.get("hdel"),
            Some(&1),
            "removed fields are HDELed: {st:?}"
        );
    }

    pub async fn cost_increment(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        s.reset_stats();
        assert_eq!(
            br.post("/counter", None).await.json(),
            json!({"counter": 1})
        );
        assert_eq!(
            s.command_stats(),
            stats(&[
                ("evalsha", 1),
                ("time", 1),
                ("hmget", 1),
                ("hlen", 1),
                ("hincrby", 1)
            ]),
            "a first increment needs no load: one script, one round trip (HMGET: the session's \
             meta, the field and its lifetime stamp; HLEN: the field limit, as the field is new)"
        );
        s.reset_stats();
        assert_eq!(
            br.post("/counter", None).await.json(),
            json!({"counter": 2})
        );
        assert_eq!(
            s.command_stats(),
            stats(&[("evalsha", 1), ("time", 1), ("hmget", 1), ("hincrby", 1)]),
            "an increment of an existing field: no field-limit check (it adds no field), its \
             lifetime stamp came with the HMGET"
        );
    }

    pub async fn cost_logged_in_past_the_touch_interval(kind: ServerKind) {
        let (fx, br) = one_session(kind).await;
        let s = fx.server();
        // Logged in: past the touch interval the user's index entry moves with the TTL, in a
        // second command sent while the handler runs.
        br.post("/login", Some(json!({"user_id": "1"}))).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.reset_stats();
        assert_eq!(br.get("/me").await.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[
                ("evalsha", 2),
                ("hgetall", 1),
                ("time", 2),
                ("hset", 1),
                ("pexpire", 2),
                ("zadd", 1),
            ]),
            "past the interval: the load's refresh (HSET, PEXPIRE) and the index bound's \
             (ZADD GT, PEXPIRE GT: no prune, no count, as the member was already there)"
        );
        s.reset_stats();
        assert_eq!(br.get("/me").await.status, 200);
        assert_eq!(
            s.command_stats(),
            stats(&[("hgetall", 1)]),
            "inside the interval: one command"
        );
        // An increment past the interval slides the TTL itself, and moves the index bound too.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.reset_stats();
        assert_eq!(br.post("/counter", None).await.status, 200);
        let st = s.command_stats();
        assert_eq!(
            (st.get("pexpire"), st.get("zadd"), st.get("hgetall")),
            (Some(&2), Some(&1), None),
            "{st:?}"
        );
    }

    pub async fn server_down_is_a_fast_503_and_recovers(kind: ServerKind) {
        let mut fx = Fixture::new(Backend::Redis(kind)).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "1"}))).await;
        tokio::time::sleep(Duration::from_millis(1200)).await; // appendfsync everysec
        fx.standalone().kill();
        let r = br.get("/me").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            r.elapsed < Duration::from_millis(1500),
            "fast, not a hang: {:?}",
            r.elapsed
        );
        let r = br.post("/counter", None).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            br.get("/noop").await.status,
            200,
            "routes that do not use the session still serve"
        );
        fx.standalone().restart(); // same port, same AOF
        let r = br.get_until_ok("/me", Duration::from_secs(10)).await;
        assert_eq!(
            r.json()["user_id"],
            "1",
            "the session survived the restart (AOF)"
        );
    }

    pub async fn paused_server_is_a_503_within_the_command_timeout(kind: ServerKind) {
        let server = Server::start(kind);
        let store = Store::redis_with(
            &server.url(),
            RedisOptions::default().command_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        let fx = Fixture::on(
            Some(tessera_tests::Topology::Standalone(server)),
            store,
            config(|c| c),
        )
        .await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "p"}))).await;
        fx.server().pause();
        let r = br.get("/me").await;
        fx.server().resume();
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            r.elapsed < Duration::from_millis(1000),
            "answered within the 300 ms timeout (+slack): {:?}",
            r.elapsed
        );
        br.get_until_ok("/me", Duration::from_secs(10)).await;
    }

    pub async fn failed_save_is_not_reported_as_success(kind: ServerKind) {
        let fx = Fixture::new(Backend::Redis(kind)).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "s"}))).await;
        // /slow-write loads, waits 400 ms, then writes: pause the server in between.
        let b2 = br.clone();
        let req = tokio::spawn(async move { b2.post("/slow-write", None).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        fx.server().pause();
        let r = req.await.unwrap();
        fx.server().resume();
        assert_eq!(
            r.status, 503,
            "the handler said 200 but the save failed: {r:?}"
        );
        // A timed-out write has an unknown outcome (the paused server may still run it after
        // SIGCONT); what is guaranteed is that the client was not told it succeeded, and that
        // the session is intact afterwards.
        let me = br.get_until_ok("/me", Duration::from_secs(10)).await;
        assert_eq!(me.json()["user_id"], "s");
    }

    pub async fn corrupt_data_from_another_app_is_a_typed_error(kind: ServerKind) {
        let fx = Fixture::new(Backend::Redis(kind)).await;
        let br = fx.browser();
        br.post("/login", Some(json!({"user_id": "c"}))).await;
        let key = fx.only_session_key();
        fx.server()
            .cmd(&["HSET", &key, "count", "{not json", "n", "7"]);
        assert_eq!(br.get("/typed/n").await.json(), json!(7));
        let r = br.get("/typed/count").await;
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(
            br.get("/me").await.json()["count"],
            "{not json",
            "readable as text"
        );
        let r = br.post("/counter", None).await;
        assert_eq!(r.status, 200);
        fx.server().cmd(&["HSET", &key, "counter", "x"]);
        let r = br.post("/counter", None).await;
        assert_eq!(
            r.status, 400,
            "HINCRBY on a non-integer is a typed error: {r:?}"
        );
        assert_eq!(br.get("/typed/n").await.status, 200, "still serving");
    }

    pub async fn logs_carry_a_short_hash_never_the_id(kind: ServerKind) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let server = Server::start(kind);
        let store = Store::redis(&server.url()).await.unwrap();
        let manager = SessionManager::new(store, config(|c| c));
        let s = manager.start(None::<&str>);
        s.insert("a", &1).await.unwrap();
        let sc = s.finish(200).await.set_cookie.unwrap();
        let pair = sc.split(';').next().unwrap().to_string();
        let s2 = manager.start([pair.as_str()]);
        s2.get::<i64>("a").await.unwrap();
        s2.insert("b", &2).await.unwrap();
        assert!(s2.finish(200).await.error.is_none());
        let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let id_part = &pair.split_once('=').unwrap().1[..22];
        assert!(
            !logs.contains(id_part),
            "the session id leaked into the logs:\n{logs}"
        );
        let key = server.keys("session:*").pop().unwrap();
        let tag = &key["session:".len().."session:".len() + 8];
        assert!(
            logs.contains("tessera.load") && logs.contains("tessera.save"),
            "{logs}"
        );
        assert!(
            logs.contains(&format!("sid={tag}")),
            "spans carry the short hash {tag}:\n{logs}"
        );
        assert!(logs.contains("commands=1"), "{logs}");
    }

    pub async fn user_index_operations_cost_o_of_the_users_sessions(kind: ServerKind) {
        let fx = Fixture::new(Backend::Redis(kind)).await;
        let s = fx.server();
        let ann: Vec<tessera_tests::Browser> = (0..3).map(|_| fx.browser()).collect();
        for b in &ann {
            b.post("/login", Some(json!({"user_id": "ann"}))).await;
        }
        // Unrelated sessions must not be visited.
        for i in 0..20 {
            fx.browser()
                .post("/login", Some(json!({"user_id": format!("other{i}")})))
                .await;
        }
        s.reset_stats();
        let r = ann[0].get("/sessions").await;
        assert_eq!(r.json().as_array().unwrap().len(), 3);
        assert_eq!(
            s.command_stats(),
            stats(&[("hgetall", 1), ("zrangebyscore", 1), ("hmget", 3)]),
            "list = plain load + index read + one pipelined HMGET per session of the user"
        );
        s.reset_stats();
        assert_eq!(ann[0].post("/logout-all", None).await.status, 204);
        assert_eq!(
            s.command_stats(),
            stats(&[
                ("hgetall", 1),
                ("zrangebyscore", 1),
                ("del", 3),
                ("zrem", 1)
            ]),
            "logout-all = plain load + index read + one pipelined DEL per session + one ZREM"
        );
        // A login of a new session, as the server counts it (the same for each device).
        let login = stats(&[
            ("evalsha", 1),
            ("exists", 1),
            ("time", 1),
            ("zadd", 1),
            ("zcard", 1),
            ("pexpire", 2),
            ("hset", 1),
        ]);
        s.reset_stats();
        fx.browser()
            .post("/login", Some(json!({"user_id": "bob"})))
            .await;
        assert_eq!(
            s.command_stats(),
            login.clone(),
            "login of a new session: one script, one server time: the session's creation \
             (EXISTS: an 'ended' tombstone may be at the fresh id; HSET, PEXPIRE) with its \
             index entry (ZADD, ZCARD for the default device limit, PEXPIRE: the key is new; \
             no prune under the limit)"
        );
        s.reset_stats();
        fx.browser()
            .post("/login", Some(json!({"user_id": "bob"})))
            .await;
        assert_eq!(
            s.command_stats(),
            login,
            "a second device of the user: the same (PEXPIRE GT keeps the key until its longest \
             bound without reading it)"
        );
        assert!(
            s.command_stats().keys().all(|k| k != "scan" && k != "keys"),
            "never a key scan"
        );
    }

    /// An increment without a load checks the field limit only for a field the hash does not
    /// hold: an existing field (even one past its lifetime, still in the hash where the server
    /// has no hash-field expiry) adds nothing; a new one at the limit is refused, nothing
    /// written. A field past its lifetime still counts from zero.
    pub async fn increments_at_the_field_limit(kind: ServerKind) {
        let fx = Fixture::with(Backend::Redis(kind), |c| c.max_fields(2)).await;
        let s = fx.server();
        let at_limit = fx.browser();
        at_limit
            .put("/session", json!({"a": 1, "counter": 5}))
            .await;
        let fresh = &at_limit;
        s.reset_stats();
        assert_eq!(
            fresh.post("/counter", None).await.json(),
            json!({"counter": 6})
        );
        let st = s.command_stats();
        assert_eq!(
            (st.get("hlen"), st.get("hkeys"), st.get("hgetall")),
            (None, None, None),
            "an existing field: no count {st:?}"
        );

        let full = fx.browser();
        full.put("/session", json!({"a": 1, "b": 2})).await;
        let fresh = &full;
        s.reset_stats();
        let r = fresh.post("/counter", None).await;
        assert_ne!(r.status, 200, "a new field past the limit: {r:?}");
        let st = s.command_stats();
        assert_eq!(st.get("hincrby"), None, "nothing written: {st:?}");
        assert_eq!(full.get("/me").await.json(), json!({"a": 1, "b": 2}));

        let stamped = fx.browser();
        stamped.put("/session", json!({"a": 1})).await;
        stamped.put("/session?ttl=1", json!({"counter": 5})).await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let fresh = &stamped;
        assert_eq!(
            fresh.post("/counter", None).await.json(),
            json!({"counter": 1}),
            "past its lifetime: counted from zero, not refused"
        );
        assert_eq!(
            stamped.get("/me").await.json(),
            json!({"a": 1, "counter": 1})
        );
    }
}
