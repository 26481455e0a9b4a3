//! The wire protocol between tessera and the server: the Lua scripts (in `scripts/`), the
//! server clock behind write deadlines, and the decoding of replies. What the scripts and
//! the Rust side must agree on (reserved names, markers, reply codes, argument positions) is
//! in [`crate::layout`]; each script is loaded with a header generated from it.

use super::super::{Load, Loaded, Mode, Refresh, Timing, WriteOp, WriteResult};
use crate::error::{Error, Result};
use crate::layout::lua_header;
use crate::layout::script_args::{self as args, write as w};
use fred::prelude::*;
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

mod script_calls;
pub(super) use self::script_calls::*;

/// A script: the header generated from its layout (reserved names, markers, reply codes,
/// its argument positions: see [`lua_header`]), the prelude's helpers it uses (see
/// [`prelude_for`]), then the script's own file.
macro_rules! script {
    ($args:ident) => {
        LazyLock::new(|| {
            let body = include_str!(concat!("scripts/", stringify!($args), ".lua"));
            Script::from_lua(format!(
                "{}{}{}",
                lua_header::header(&args::$args::SPEC),
                prelude_for(PRELUDE, body),
                body
            ))
        })
    };
}

/// The shared helpers (prelude.lua).
const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// The helpers of `prelude` (a sequence of top-level `local function NAME(...)` blocks, each
/// with the comment lines before it) that `body` calls, directly or through another helper,
/// in the prelude's order. Redis runs a script's whole text on every `EVALSHA`: each helper
/// defined is a closure made and collected per call, used or not (measured in issue #25 with
/// `redis-benchmark` on Redis 7.0: the whole prelude costs 0.8 µs per call, `write.lua`'s
/// share 0.5 µs, `index_add.lua`'s under 0.2 µs).
pub(super) fn prelude_for(prelude: &str, body: &str) -> String {
    // Split into (name, text) blocks, each from its `local function` line to the next one
    // (the comments before a helper end up with the one above it: comments either way).
    let mut head = String::new();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in prelude.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("local function ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            blocks.push((name, String::new()));
        }
        match blocks.last_mut() {
            Some((_, text)) => text.push_str(line),
            None => head.push_str(line),
        }
    }
    let calls = |text: &str, name: &str| {
        text.match_indices(name).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + name.len()..].chars().next();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !ident(before) && !ident(after)
        })
    };
    // Later helpers may call earlier ones only (Lua locals): walk backwards once.
    let mut used = vec![false; blocks.len()];
    for i in (0..blocks.len()).rev() {
        let needed_by_later =
            (i + 1..blocks.len()).any(|j| used[j] && calls(&blocks[j].1, &blocks[i].0));
        used[i] = calls(body, &blocks[i].0) || needed_by_later;
    }
    let mut out = head;
    for (b, u) in blocks.iter().zip(used) {
        if u {
            out.push_str(&b.1);
        }
    }
    out
}

pub(super) static LOAD: LazyLock<Script> = script!(load);
pub(super) static WRITE: LazyLock<Script> = script!(write);
pub(super) static CREATE: LazyLock<Script> = script!(create);
pub(super) static INDEX_ADD: LazyLock<Script> = script!(index_add);
pub(super) static FREEZE: LazyLock<Script> = script!(freeze);
pub(super) static RELEASE: LazyLock<Script> = script!(release);
pub(super) static INDEX_PRUNE: LazyLock<Script> = script!(index_prune);
pub(super) static END_IF: LazyLock<Script> = script!(end_if);
pub(super) static TAKE: LazyLock<Script> = script!(take);
pub(super) static FIELD_ADD: LazyLock<Script> = script!(field_add);
pub(super) static EVENTS: LazyLock<Script> = script!(events);
pub(super) static EVENTS_DUE: LazyLock<Script> = script!(events_due);
pub(super) static EVENTS_READ: LazyLock<Script> = script!(events_read);
pub(super) static PROBE: LazyLock<Script> = script!(probe);
pub(super) static RETIRE_LEGACY: LazyLock<Script> = script!(retire_legacy);
pub(super) static SET_IF_ABSENT: LazyLock<Script> = script!(set_if_absent);

/// The scripts' reply codes: the one table in [`crate::layout::replies`].
pub(super) mod code {
    pub(crate) use crate::layout::replies::*;
}

/// An upper bound of the server's clock, kept on this process's monotonic clock, so each
/// write can carry a deadline in server time (see `past_deadline` in prelude.lua).
///
/// An observation "the server said `S` ms in a reply received at monotonic `t1`" puts the
/// server's clock at any later monotonic `t` at `S + (t - t1)` or a little more (the server
/// read its clock before `t1`): estimates err early, by at most the round trip, so a deadline
/// is never later than meant. An early one can only refuse a write, which the reply corrects
/// (it carries the server's time) before one retry. The latest observation is kept, so a
/// server clock that steps is followed.
#[derive(Debug)]
pub(super) struct ServerClock {
    base: std::time::Instant,
    /// `S - t0` in ms; `i64::MIN` until the first observation.
    offset_ms: std::sync::atomic::AtomicI64,
}

/// Slack added to every deadline: the clocks of a cluster's nodes (or of a Sentinel's primary
/// after a failover) may differ a little; a larger difference costs one retry, never a write.
pub(super) const DEADLINE_SLACK_MS: u64 = 250;

impl ServerClock {
    pub(super) fn new() -> Self {
        ServerClock {
            base: std::time::Instant::now(),
            offset_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    fn mono_ms(&self, at: std::time::Instant) -> i64 {
        at.saturating_duration_since(self.base).as_millis() as i64
    }

    pub(super) fn observe(&self, server_ms: i64, received: std::time::Instant) {
        self.offset_ms.store(
            server_ms - self.mono_ms(received),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The server's clock now, as estimated (errs early by at most a round trip); this
    /// process's wall clock until the first observation.
    pub(super) fn now_ms(&self) -> i64 {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Relaxed);
        if offset == i64::MIN {
            return crate::store::now_ms() as i64;
        }
        offset + self.mono_ms(std::time::Instant::now())
    }

    /// The deadline (server ms) for a write sent now that may take `budget`; 0 = unknown yet.
    pub(super) fn deadline(&self, budget: Duration) -> i64 {
        let offset = self.offset_ms.load(std::sync::atomic::Ordering::Relaxed);
        if offset == i64::MIN {
            return 0;
        }
        offset
            + self.mono_ms(std::time::Instant::now())
            + budget.as_millis() as i64
            + DEADLINE_SLACK_MS as i64
    }
}

/// `{EXPIRED, now}`: the server's time, if this reply is one.
pub(super) fn expired(reply: &Value) -> Option<i64> {
    match reply {
        Value::Array(v) if v.len() == 2 && v[0].as_i64() == Some(code::EXPIRED) => v[1].as_i64(),
        _ => None,
    }
}

/// A reply value as raw bytes (`None` for nil).
pub(super) fn value_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::Bytes(b) => Some(b.to_vec()),
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        other => other.into_string().map(String::into_bytes),
    }
}

pub(super) fn unexpected(msg: String) -> Error {
    Error::Store(crate::error::StoreError::new(msg))
}

pub(super) fn parse_load(reply: Value) -> Result<Load> {
    let Value::Array(mut parts) = reply else {
        return Err(unexpected("load script replied with a non-array".into()));
    };
    let status = parts.first().and_then(|v| v.as_i64()).unwrap_or(-99);
    if status == code::GONE {
        return Ok(Load::Gone);
    }
    if status == code::MOVED {
        return Ok(Load::Moved);
    }
    let refresh = match (status, parts.len()) {
        (code::DONE, 2) => Refresh::Done,
        (code::FRESH, 3) => Refresh::NotDue {
            age_ms: parts
                .pop()
                .and_then(|v| v.as_i64())
                .map(|a| a.max(0) as u64),
        },
        (code::TOUCH_REFUSED, 3) => {
            Refresh::Refused(parts.pop().and_then(Value::into_string).unwrap_or_default())
        }
        _ => return Err(unexpected(format!("load script replied {parts:?}"))),
    };
    Ok(Load::Found(Loaded {
        fields: std::sync::Arc::new(flat_fields(parts.pop().expect("len checked"))?),
        refresh,
        cached: false,
    }))
}

/// A hash reply (a flat array of field, value, ... or a map) as fields.
pub(super) fn flat_fields(v: Value) -> Result<HashMap<String, Vec<u8>>> {
    // A field name that is not UTF-8 (written by another program) is kept, lossily, so the
    // session still loads; it can never be one of tessera's names.
    fn name(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
    let mut fields;
    match v {
        Value::Array(flat) => {
            fields = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = value_bytes(k) {
                    fields.insert(name(k), value_bytes(v).unwrap_or_default());
                }
            }
        }
        Value::Map(m) => {
            let m = m.inner();
            fields = HashMap::with_capacity(m.len());
            for (k, v) in m {
                fields.insert(
                    name(k.into_bytes().to_vec()),
                    value_bytes(v).unwrap_or_default(),
                );
            }
        }
        Value::Null => fields = HashMap::new(),
        other => return Err(unexpected(format!("expected a hash, got {other:?}"))),
    };
    Ok(fields)
}

/// The arguments of `write.lua`, each at its position in [`args::write`] (the deadline,
/// first of all, is added by the caller of every write script), then the set pairs, the
/// deleted fields, the lifetimes and the trail entries.
pub(super) struct WriteArgs<'a, 'b> {
    pub(super) op: &'a WriteOp<'b>,
    pub(super) timing: Timing,
    pub(super) freeze_ms: u64,
    /// The server has hash-field expiry (`HPEXPIRE`).
    pub(super) native_expiry: bool,
}

impl WriteArgs<'_, '_> {
    pub(super) fn to_values(&self) -> Vec<Value> {
        let (op, t) = (self.op, self.timing);
        let (mode, created) = match op.mode {
            Mode::Create { created_ms } => ("c", created_ms),
            Mode::Update => ("u", 0),
        };
        let (incr_field, incr_by) = op.incr.unwrap_or(("", 0));
        let int = |n: u64| Value::from(n.min(i64::MAX as u64) as i64);
        let rest = op.set.len() * 2 + op.del.len() + op.expire.len() * 2 + op.records.len();
        let mut a = w::argv::<Value>(rest);
        a.set(w::MODE, mode)
            .set(w::IDLE_MS, int(t.idle_ms))
            .set(w::ABSOLUTE_MS, int(t.absolute_ms))
            .set(w::CREATED_MS, int(created))
            .set(w::NSET, int(op.set.len() as u64))
            .set(w::NDEL, int(op.del.len() as u64))
            .set(w::INCR_FIELD, incr_field)
            .set(w::INCR_BY, incr_by)
            .set(w::TOUCH_MS, int(t.touch_ms))
            .set(w::FREEZE_MS, int(self.freeze_ms))
            .set(w::MAX_FIELDS, int(op.max_fields as u64))
            .set(w::NATIVE, if self.native_expiry { "1" } else { "0" })
            .set(w::NEXP, int(op.expire.len() as u64))
            .set(w::NREC, int(op.records.len() as u64))
            .set(w::TRAIL_MAX, int(t.trail_max as u64))
            .set(w::LONGEST_MS, int(t.longest_ms));
        for (f, v) in &op.set {
            a.push(*f).push(*v);
        }
        for f in &op.del {
            a.push(*f);
        }
        for (f, ms) in &op.expire {
            a.push(*f).push(int(*ms));
        }
        for r in &op.records {
            a.push(*r);
        }
        a.finish()
    }
}

/// `write.lua`'s reply: `{DONE, incr (integer, or text past 2^53), refreshed, user, now}`
/// or a bare code.
/// The server time a write script's `{DONE, _, _, _, now, ...}` reply carries: an integer
/// (Lua's number). A reply of stored values (take.lua's `{DONE, v1, v2, ...}`) has strings
/// there, which are never taken for the time, whatever they hold.
pub(super) fn reply_server_time(v: &Value) -> Option<i64> {
    match v {
        Value::Array(parts) if parts.len() >= 5 && parts[0].as_i64() == Some(code::DONE) => {
            match parts[4] {
                Value::Integer(now) => Some(now),
                _ => None,
            }
        }
        _ => None,
    }
}

pub(super) fn parse_write(reply: Vec<Value>) -> Result<WriteResult> {
    let int = |i: usize| reply.get(i).and_then(Value::as_i64);
    Ok(match int(0) {
        Some(code::DONE) => WriteResult::Written {
            incr: match reply.get(1) {
                Some(Value::Integer(i)) => *i,
                Some(v) => v
                    .as_string()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| unexpected(format!("write script replied {reply:?}")))?,
                None => 0,
            },
            refreshed: int(2) == Some(1),
            user: reply
                .get(3)
                .and_then(|v| v.as_string())
                .filter(|u| !u.is_empty()),
            // create.lua with the user's index: the members over the device limit.
            victims: match reply.get(5) {
                Some(Value::Array(v)) => v.iter().filter_map(Value::as_string).collect(),
                _ => Vec::new(),
            },
        },
        Some(code::GONE) => WriteResult::Gone,
        Some(code::EXISTS) => WriteResult::Exists,
        Some(code::NOT_AN_INTEGER) => WriteResult::NotAnInteger,
        Some(code::MOVED) => WriteResult::Moved,
        Some(code::TOO_MANY_FIELDS) => WriteResult::TooManyFields,
        _ => return Err(unexpected(format!("write script replied {reply:?}"))),
    })
}

#[cfg(test)]
mod prelude_tests {
    use super::*;

    /// Only a write script's own integer time is taken for the server's clock: a take-over's
    /// reply of four or more stored values (strings, numeric or not) never is.
    #[test]
    fn only_an_integer_reply_time_is_the_server_time() {
        let done = Value::Integer(code::DONE);
        let write = Value::Array(vec![
            done.clone(),
            Value::Integer(0),
            Value::Integer(1),
            Value::from(""),
            Value::Integer(1_700_000_000_000),
        ]);
        assert_eq!(reply_server_time(&write), Some(1_700_000_000_000));
        let mut with_victims = write.clone().into_array();
        with_victims.push(Value::Array(vec![Value::from("m0")]));
        assert_eq!(
            reply_server_time(&Value::Array(with_victims)),
            Some(1_700_000_000_000)
        );
        for n in [4, 5, 7] {
            let mut take = vec![done.clone()];
            take.extend((0..n).map(|i| Value::from(format!("{}", 42 + i))));
            assert_eq!(reply_server_time(&Value::Array(take)), None, "{n} values");
        }
        assert_eq!(reply_server_time(&Value::Integer(code::DONE)), None);
    }

    /// The helpers a script's text names, and what they need: the names `body` (and the
    /// helpers kept) use, nothing else.
    #[test]
    fn a_script_gets_the_helpers_it_calls_and_what_they_call() {
        let keeps = |body: &str, name: &str| {
            prelude_for(PRELUDE, body).contains(&format!("local function {name}("))
        };
        let body = "local now = now_ms()\nif is_tombstone(a, b) then return 1 end";
        assert!(keeps(body, "now_ms") && keeps(body, "is_tombstone"));
        // is_tombstone calls is_retired, defined before it.
        assert!(keeps(body, "is_retired"));
        assert!(!keeps(body, "append_trail") && !keeps(body, "drop_expired"));
        // A name inside another identifier is no call.
        assert!(!keeps("local my_now_ms_x = 1", "now_ms"));
        // Nothing used: only the prelude's opening comments.
        assert!(!prelude_for(PRELUDE, "return 1").contains("local function"));
        // The split is by `local function` lines: anything else at the prelude's top level
        // (a shared constant) would ride with the helper above it and could be dropped.
        for line in PRELUDE.lines() {
            assert!(
                line.is_empty()
                    || line.starts_with("--")
                    || line.starts_with("local function ")
                    || line == "end"
                    || line.starts_with(' '),
                "prelude.lua: only helpers (`local function`) at the top level: {line:?}"
            );
        }
        // Every script keeps each helper it calls (the suites run every script on real
        // servers; a missing helper is a Lua error there too).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/redis/scripts");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "prelude.lua" {
                continue;
            }
            let body = std::fs::read_to_string(&path).unwrap();
            for line in PRELUDE.lines() {
                if let Some(rest) = line.strip_prefix("local function ") {
                    let name = &rest[..rest.find('(').unwrap()];
                    if body.contains(&format!("{name}(")) {
                        assert!(keeps(&body, name), "{path:?}: {name} dropped");
                    }
                }
            }
            checked += 1;
        }
        assert!(checked >= 16, "every script checked ({checked})");
    }
}
