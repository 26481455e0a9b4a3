//! What both adapters' live-connection helpers send when a session ends, defined once: the
//! server-sent event's name and data, and the WebSocket close frame's code and reason.

use crate::session::EndCause;

/// The name of the last server-sent event of a stream whose session ended.
pub const ENDED_EVENT: &str = "ended";

/// The WebSocket close code when the session ended (4000-4999 are for applications): a
/// client tells it from a network drop and does not reconnect.
pub const ENDED_CLOSE_CODE: u16 = 4001;

/// The data of the [`ENDED_EVENT`]: `{"cause": "<cause>"}`
/// ([`EndCause::as_str`]); also the WebSocket close frame's reason.
///
/// ```
/// use tessera_core::{adapter::ended_data, EndCause};
/// assert_eq!(ended_data(EndCause::LogoutAll), r#"{"cause":"logout_all"}"#);
/// ```
pub fn ended_data(cause: EndCause) -> String {
    serde_json::json!({ "cause": cause.as_str() }).to_string()
}

/// A server-sent event as it goes on the wire: `event: <name>` (if any), one `data:` line per
/// line of `data`, and the blank line that ends it. For adapters without an SSE type of their
/// own (actix-web).
///
/// ```
/// use tessera_core::adapter::sse_frame;
/// assert_eq!(sse_frame(Some("tick"), "a\nb"), "event: tick\ndata: a\ndata: b\n\n");
/// assert_eq!(sse_frame(None, "a\rid: 9"), "data: a\ndata: id: 9\n\n");
/// ```
pub fn sse_frame(event: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = event {
        // A name is one line: anything after a line break would start a new field.
        let name = name.split(['\r', '\n']).next().unwrap_or_default();
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    // Every line break the protocol knows (CRLF, LF, CR) starts a new data line, so data can
    // never end the event or add a field.
    for line in data.replace("\r\n", "\n").split(['\r', '\n']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}
