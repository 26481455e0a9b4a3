//! Anything read back from the store is untrusted input: corrupt metadata (a `__t` past
//! year 9999, `__c` that is not a number, bytes that are not UTF-8) is an error or a
//! dropped row, never a panic.
use super::devices::check_user_id;
use super::*;
use crate::config::SessionConfig;
use crate::store::fields;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"99999999999999999999".to_vec()),
        Just(u64::MAX.to_string().into_bytes()),
        Just(b"253402300800000".to_vec()), // year 10000
        Just(b"-1".to_vec()),
        Just(b"1e30".to_vec()),
        Just(b"".to_vec()),
        Just(vec![0xff, 0xfe, 0x00]),
        Just(b"{\"a\":".to_vec()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn hash() -> impl Strategy<Value = HashMap<String, Vec<u8>>> {
    let name = prop_oneof![
        Just(fields::CREATED.to_string()),
        Just(fields::TOUCHED.to_string()),
        Just(fields::USER.to_string()),
        Just(fields::USER_AGENT.to_string()),
        Just(fields::CLIENT_ADDR.to_string()),
        Just(fields::MOVING.to_string()),
        Just("n".to_string()),
        "[a-z]{1,6}",
    ];
    proptest::collection::hash_map(name, value(), 0..10)
}

async fn exercise(stored: HashMap<String, Vec<u8>>) {
    let store = Store::memory();
    let config = SessionConfig::builder(crate::Key::generate())
        .build()
        .unwrap();
    let manager = SessionManager::new(store.clone(), config);
    let id = SessionId::generate();
    let member = id.storage_key();
    let key = manager.key_of(&id);
    let user = stored
        .get(fields::USER)
        .map(|u| String::from_utf8_lossy(u).into_owned());
    store.memory_backend().unwrap().put_raw(&key, stored);
    if let Some(u) = user.as_deref().filter(|u| check_user_id(u).is_ok()) {
        let index = manager.config().index_key(u);
        store
            .index_add(&index, &member, 60_000, 0, None)
            .await
            .unwrap();
        let _ = manager.list_sessions(u).await.map(|l| {
            l.iter()
                .map(|d| serde_json::to_value(d).unwrap())
                .collect::<Vec<_>>()
        });
    }
    let cookie = format!(
        "{}={}",
        manager.config().cookie_name(),
        manager
            .config()
            .signer
            .sign(manager.config().cookie_name(), &id)
    );
    let s = manager.start([cookie.as_str()]);
    let _ = s.entries().await;
    let _ = s.get::<i64>("n").await;
    let _ = s.user_id().await;
    let _ = s.created_at().await;
    if let Ok(list) = s.list_sessions().await {
        let _: Vec<_> = list
            .iter()
            .map(|d| serde_json::to_value(d).unwrap())
            .collect();
    }
    let _ = s.increment("n", 1).await;
    let _ = s.insert("x", &1).await;
    let _ = s.login("someone").await;
    let _ = s.finish(200).await;
}

proptest! {
    // PROPTEST_CASES cases: 10,000 in the test command (`.cargo/config.toml`).
    #[test]
    fn corrupt_stored_hashes_never_panic(stored in hash()) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(exercise(stored));
    }
}

#[test]
fn times_past_year_9999_are_refused_not_panicked_on() {
    assert!(time_of_ms("253402300799999").is_some());
    assert!(time_of_ms("253402300800000").is_none());
    assert!(time_of_ms("99999999999999999999").is_none());
    assert!(time_of_ms("-5").is_none());
    let far = DeviceSession {
        handle: "h".into(),
        created_at: std::time::UNIX_EPOCH + Duration::from_secs(400_000_000_000),
        last_seen: std::time::UNIX_EPOCH,
        user_agent: None,
        client_addr: None,
        current: false,
        last_action: None,
    };
    assert_eq!(
        serde_json::to_value(&far).unwrap()["created_at"],
        "",
        "unrepresentable: empty, no panic"
    );
}
