//! Output: aligned tables for people, JSON for scripts (`--json`). Everything printed comes
//! from the store, so it is printed as data: control characters in stored text (a user agent,
//! a field value) are escaped, never sent to the terminal.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::SystemTime;
use tessera_core::{DeviceSession, Event, ServerReport, SessionDetails};

/// How to print.
pub(crate) struct Out {
    pub(crate) json: bool,
}

/// What the server offers besides the basics (`doctor`).
pub(crate) struct Capabilities {
    pub(crate) query_engine: bool,
    pub(crate) field_expiry: bool,
}

fn print(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`tessera events | head`) ends the output, not the process with a panic.
    if writeln!(stdout, "{line}").is_err() {
        std::process::exit(0);
    }
}

fn print_json(v: &Value) {
    print(&v.to_string());
}

/// Stored text, safe for a terminal: control characters, and the invisible and bidirectional
/// formatting characters (which can reorder or hide what an operator reads), escaped.
pub(crate) fn shown(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() || is_format(c) {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Unicode format characters (category Cf) that change how text around them is shown.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A value in a `name=value` line: [`shown`], and quoted (JSON) when it holds white space, `=`
/// or `"`, or is empty, so that stored text cannot pose as another `name=value`.
fn shown_value(s: &str) -> String {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '=' || c == '"') {
        shown(&serde_json::Value::String(s.to_string()).to_string())
    } else {
        shown(s)
    }
}

fn time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        print(s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

impl Out {
    pub(crate) fn doctor(&self, report: &ServerReport, caps: &Capabilities) {
        let warnings: Vec<String> = report.warnings.iter().map(|w| w.to_string()).collect();
        if self.json {
            return print_json(&json!({
                "servers": report.servers,
                "warnings": warnings,
                "query_engine": caps.query_engine,
                "field_expiry": caps.field_expiry,
            }));
        }
        for s in &report.servers {
            print(&format!("server      {s}"));
        }
        let yes_no = |b: bool, yes: &str, no: &str| if b { yes } else { no }.to_string();
        print(&format!(
            "queries     {}",
            yes_no(
                caps.query_engine,
                "the query engine (FT.*) is there",
                "no query engine: queries use tessera's own field indexes"
            )
        ));
        print(&format!(
            "lifetimes   {}",
            yes_no(
                caps.field_expiry,
                "field lifetimes use the server's hash-field expiry",
                "no hash-field expiry: field lifetimes use stamps"
            )
        ));
        if warnings.is_empty() {
            print("ok          no setting puts sessions at risk");
        }
        for w in warnings {
            print(&format!("change      {w}"));
        }
    }

    pub(crate) fn sessions(&self, devices: &[DeviceSession]) {
        if self.json {
            return print_json(&serde_json::to_value(devices).unwrap_or_default());
        }
        let rows: Vec<Vec<String>> = devices
            .iter()
            .map(|d| {
                vec![
                    d.handle.clone(),
                    time(d.created_at),
                    time(d.last_seen),
                    shown(d.client_addr.as_deref().unwrap_or("-")),
                    shown(d.user_agent.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        table(
            &["HANDLE", "CREATED", "LAST SEEN", "ADDRESS", "AGENT"],
            &rows,
        );
    }

    pub(crate) fn details(&self, d: &SessionDetails) {
        if self.json {
            return print_json(&serde_json::to_value(d).unwrap_or_default());
        }
        let opt = |s: &Option<String>| shown(s.as_deref().unwrap_or("-"));
        let t = |t: Option<SystemTime>| t.map(time).unwrap_or_else(|| "-".into());
        let mut rows = vec![
            vec!["handle".into(), d.handle.clone()],
            vec!["user".into(), opt(&d.user_id)],
            vec!["created".into(), t(d.created_at)],
            vec!["last seen".into(), t(d.last_seen)],
            vec!["address".into(), opt(&d.client_addr)],
            vec!["agent".into(), opt(&d.user_agent)],
        ];
        let mut fields: Vec<(String, String)> = d
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), shown(&v.to_string())))
            .collect();
        fields.extend(
            d.protected
                .iter()
                .map(|k| (k.clone(), "(protected)".into())),
        );
        fields.sort();
        rows.extend(
            fields
                .into_iter()
                .map(|(k, v)| vec![format!("field {}", shown(&k)), v]),
        );
        table(&["", ""], &rows);
    }

    pub(crate) fn counts(&self, field: &str, counts: &BTreeMap<String, usize>) {
        if self.json {
            return print_json(&json!(counts));
        }
        let mut sorted: Vec<(&String, &usize)> = counts.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let rows: Vec<Vec<String>> = sorted
            .into_iter()
            .map(|(v, n)| vec![n.to_string(), shown(v)])
            .collect();
        table(&["SESSIONS", &field.to_uppercase()], &rows);
    }

    pub(crate) fn ended(&self, matched: usize, ended: usize) {
        if self.json {
            return print_json(&json!({ "matched": matched, "ended": ended }));
        }
        print(&format!("ended {ended} of {matched} matching session(s)"));
    }

    pub(crate) fn event(&self, e: &Event) {
        if self.json {
            return print_json(&serde_json::to_value(e).unwrap_or_default());
        }
        print(&format!(
            "{}  {:<10}  {}  user={}  instance={}  cursor={}",
            time(e.at),
            e.kind.as_str(),
            e.handle,
            shown_value(e.user_id.as_deref().unwrap_or("-")),
            shown_value(&e.instance),
            e.cursor
        ));
    }

    /// After a page of events: where the next one starts (stderr for people, so that the
    /// events alone go down a pipe; a last JSON line for scripts).
    pub(crate) fn cursor(&self, cursor: &str) {
        if self.json {
            return print_json(&json!({ "cursor": cursor }));
        }
        eprintln!("next: tessera events --after {cursor}");
    }
}

/// Asks on the terminal (stderr) and reads the answer from stdin: `y` or `yes` confirms;
/// anything else, or no answer (stdin closed), does not.
pub(crate) fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    match std::io::stdin().read_line(&mut answer) {
        Ok(0) | Err(_) => {
            eprintln!();
            false
        }
        Ok(_) => matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_text_cannot_drive_the_terminal() {
        assert_eq!(super::shown("curl/8\u{1b}[2J\n"), "curl/8\\u{1b}[2J\\n");
        assert_eq!(super::shown("Firefox é"), "Firefox é");
        assert_eq!(super::shown("t\u{202e}live"), "t\\u{202e}live");
        assert_eq!(super::shown("a\u{200b}b"), "a\\u{200b}b");
    }

    #[test]
    fn a_stored_value_cannot_pose_as_another_field() {
        assert_eq!(super::shown_value("ann"), "ann");
        assert_eq!(
            super::shown_value("victim  instance=host-1"),
            "\"victim  instance=host-1\""
        );
        assert_eq!(super::shown_value(""), "\"\"");
    }
}
