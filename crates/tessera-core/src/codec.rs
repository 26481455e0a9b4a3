//! How values are written into hash fields.
//!
//! A string is stored as its plain text (so `HGET session:<key> tenant` prints `acme`) unless
//! that text would itself parse as JSON (`"42"`, `"true"`, `"null"`, `"\"x\""`); such strings,
//! and every other value, are stored as JSON. Decoding parses JSON first and falls back to the
//! plain text as a string, which makes the round trip exact for every value `serde_json`
//! represents. Two kinds it does not: an integer beyond `u64` is `Error::Encode`, and a NaN or
//! infinite float becomes JSON `null` (so it reads back as `None`, or a decode error).

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value).map_err(|e| Error::Encode(Arc::new(e)))?;
    Ok(encode_value(&v))
}

pub(crate) fn encode_value(v: &Value) -> String {
    match v {
        Value::String(s) if serde_json::from_str::<Value>(s).is_err() => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn decode_value(raw: &[u8]) -> std::result::Result<Value, serde_json::Error> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => Ok(v),
        Err(e) => match std::str::from_utf8(raw) {
            Ok(s) => Ok(Value::String(s.to_string())),
            Err(_) => Err(e),
        },
    }
}

pub(crate) fn decode<T: DeserializeOwned>(field: &str, raw: &[u8]) -> Result<T> {
    let err = |e| Error::Decode {
        field: field.to_string(),
        source: Arc::new(e),
    };
    let v = decode_value(raw).map_err(err)?;
    T::deserialize(v).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn rt<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        let s = encode(&v).unwrap();
        let back: T = decode("f", s.as_bytes()).unwrap();
        assert_eq!(back, v, "stored as {s:?}");
    }

    #[test]
    fn strings_are_plain_text_when_unambiguous() {
        assert_eq!(encode("acme").unwrap(), "acme");
        assert_eq!(encode("42").unwrap(), "\"42\"");
        assert_eq!(encode(&42).unwrap(), "42");
        assert_eq!(encode("").unwrap(), "");
        assert_eq!(encode("null").unwrap(), "\"null\"");
    }

    #[test]
    fn corrupt_data_is_a_typed_error() {
        let e = decode::<u32>("n", b"not a number").unwrap_err();
        assert!(
            matches!(e, Error::Decode { ref field, .. } if field == "n"),
            "{e:?}"
        );
        let e = decode::<String>("b", &[0xff, 0xfe]).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }));
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize, Clone)]
    enum Shape {
        Unit,
        Tuple(i32, String),
        Struct { a: Option<bool>, b: Vec<u8> },
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unit),
            (any::<i32>(), ".*").prop_map(|(a, b)| Shape::Tuple(a, b)),
            (any::<Option<bool>>(), any::<Vec<u8>>()).prop_map(|(a, b)| Shape::Struct { a, b }),
        ]
    }

    /// The two documented exceptions to the exact round trip (README, "Any serde value").
    #[test]
    fn huge_integers_and_non_finite_floats_do_not_round_trip() {
        assert!(matches!(encode(&u128::MAX), Err(Error::Encode(_))));
        assert_eq!(encode(&(u64::MAX as u128)).unwrap(), u64::MAX.to_string());
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let stored = encode(&f).unwrap();
            assert_eq!(stored, "null");
            assert_eq!(decode::<Option<f64>>("x", stored.as_bytes()).unwrap(), None);
            assert!(matches!(
                decode::<f64>("x", stored.as_bytes()),
                Err(Error::Decode { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn any_string_round_trips(s in ".*") { rt(s); }
        #[test]
        fn json_looking_strings_round_trip(s in r#"[ \t]*(-?[0-9]{1,5}(\.[0-9]+)?|true|false|null|"[a-z"]*"|\[\]|\{\})[ \t]*"#) { rt(s); }
        #[test]
        fn numbers_round_trip(i in any::<i64>(), u in any::<u64>(), f in -1e300f64..1e300) { rt(i); rt(u); rt(f); }
        #[test]
        fn options_and_nested_values_round_trip(v in proptest::option::of(proptest::collection::vec(".*", 0..4))) { rt(v); }
        #[test]
        fn enums_and_maps_round_trip(s in shape(), m in proptest::collection::btree_map(".*", any::<i16>(), 0..4)) {
            rt(s);
            rt::<BTreeMap<String, i16>>(m);
        }
    }
}
