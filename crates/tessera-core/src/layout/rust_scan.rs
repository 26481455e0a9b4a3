//! The scan of the crate's Rust files outside `layout/`: the Rust side, too, takes every
//! reserved field name, marker value and key format from the layout, never types one itself.
//!
//! What fails, in each `.rs` file under `src/` but `layout.rs` and `layout/` (comment lines,
//! `//` and `///`, are skipped: they may show a stored value):
//! - a reserved-name string literal: `"__` then lower-case letters, closed by `"` or `:`
//!   (`"__c"`, `"__x:"`, `"__"`); cookie prefixes (`"__Host-"`) and keyspace channels
//!   (`"__keyevent@…"`) are other namespaces and do not match;
//! - a marker literal: `"retired ` or `"ended"` (`b"…"` included);
//! - a key fragment: `sessions-idx"`, `:ended_before"`, `near-cache:db"`.
//!
//! Nothing is allowed: there is no allow-list (a test asserting what Redis holds names the
//! layout's constants too).

use std::path::{Path, PathBuf};

/// What may only appear in `layout/` (besides the reserved-name rule in [`reserved_literal`]).
const FORBIDDEN: &[&str] = &[
    "\"retired ",
    "\"ended\"",
    "sessions-idx\"",
    ":ended_before\"",
    "near-cache:db\"",
];

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("a source directory") {
        let p = e.expect("a directory entry").path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "layout" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") && p != src_dir().join("layout.rs") {
            out.push(p);
        }
    }
}

/// Whether `line` holds a string literal `"__[a-z]*"` or `"__[a-z]*:` (an opening quote, not
/// an escaped one inside another string).
fn reserved_literal(line: &str) -> bool {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(i) = line[from..].find("\"__").map(|i| i + from) {
        from = i + 1;
        if i > 0 && b[i - 1] == b'\\' {
            continue;
        }
        let rest = &b[i + 3..];
        let n = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
        if matches!(rest.get(n), Some(b'"') | Some(b':')) {
            return true;
        }
    }
    false
}

fn findings(file: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let bad = reserved_literal(line) || FORBIDDEN.iter().any(|f| line.contains(f));
        if bad {
            out.push(format!("{file}:{}: {}", n + 1, line.trim()));
        }
    }
    out
}

#[test]
fn no_rust_file_outside_the_layout_types_a_name_a_marker_or_a_key() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    assert!(files.len() > 20, "sources not found in {:?}", src_dir());
    let mut all = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).expect("a source file");
        let rel = p
            .strip_prefix(src_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        all.extend(findings(&rel, &text));
    }
    assert!(
        all.is_empty(),
        "use crate::layout (fields, marker, keys) instead:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_rust_scan_catches_each_kind() {
    for bad in [
        r#"let f = "__c";"#,
        r#"h.get("__m")"#,
        r#"format!("__x:{f}")"#,
        r#"!name.starts_with("__")"#,
        r#"v.starts_with(b"retired ")"#,
        r#"m == b"ended""#,
        r#"format!("{ns}sessions-idx")"#,
        r#"format!("{ns}user:{u}:ended_before")"#,
        r#"const M: &str = "tessera:near-cache:db";"#,
    ] {
        assert_eq!(findings("x.rs", bad).len(), 1, "{bad}");
    }
    for fine in [
        r#"/// `__m` = "retired <token>", or "ended""#,
        r#"cookie_name("__Host-x")"#,
        r#"psubscribe("__keyevent@*__:expired")"#,
        r#""user fields must not start with \"__\"""#,
        r#"fields::MOVING"#,
    ] {
        assert!(findings("x.rs", fine).is_empty(), "{fine}");
    }
}
