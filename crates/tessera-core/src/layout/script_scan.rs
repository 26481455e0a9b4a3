//! The scan of every Lua script: a script takes every reserved name, marker value, reply code
//! and argument position from the generated header (lua_header.rs), never types one itself.
//!
//! What fails, in each `.lua` file of `store/redis/scripts/` (the prelude included):
//! - a string literal starting with `__` (`'__…'` or `"__…"`), comments included;
//! - in code (comments stripped): a marker literal (`'retired…`, `'ended'`, either quote);
//! - a bare reply code: `return <number>`, `return -<number>`, `return {<number>` or
//!   `return {-<number>` (a reply starts with a named code);
//! - an argument offset not from the layout: `ARGV[` followed by a number (`ARGV[1]`
//!   included: the deadline is `ARGV[A_DEADLINE]`), `unpack(ARGV, <number>`, or a loop over
//!   `ARGV` starting at a number (`for i = 3, #ARGV`); positions come from `A_<NAME>` and
//!   `A_REST`, and offsets within a group from its start (`ARGV[at + 1]`);
//! - a `local` that names anything the header defines, or an upper-case constant of the
//!   script's own bound to a number (`local MOVED = -3`, `local FIRST = 18`).
//!
//! Every script file has an argument layout (script_args.rs) and every layout a file.

use super::lua_header;
use super::script_args::{self, ArgSpec};
use std::path::PathBuf;

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/store/redis/scripts")
}

/// Every script: (file name, text).
fn scripts() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(scripts_dir())
        .expect("the scripts directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "lua"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("a script"))
        })
        .collect();
    out.sort();
    assert!(out.len() > 10, "scripts not found in {:?}", scripts_dir());
    out
}

/// A line without its comment (scripts have no `--` inside strings; checked below).
fn code(line: &str) -> &str {
    match line.find("--") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn starts_with_number(s: &str) -> bool {
    let s = s.trim_start();
    let s = s.strip_prefix('-').unwrap_or(s).trim_start();
    s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_constant_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars().any(|c| c.is_ascii_uppercase())
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// What is wrong with one script: a message per finding, `file:line: ...`.
fn findings(file: &str, text: &str, header_names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        for q in ["'__", "\"__"] {
            if line.contains(q) {
                out.push(format!("{at}: a reserved name typed ({q}): {line}"));
            }
        }
        let c = code(line);
        for m in ["'retired", "\"retired", "'ended'", "\"ended\""] {
            if c.contains(m) {
                out.push(format!("{at}: a marker typed ({m}): {line}"));
            }
        }
        for (j, _) in c.match_indices("return") {
            let before_ok =
                j == 0 || !c[..j].ends_with(|ch: char| ch.is_alphanumeric() || ch == '_');
            let rest = &c[j + "return".len()..];
            if !before_ok || !rest.starts_with([' ', '{']) {
                continue;
            }
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            if starts_with_number(rest) {
                out.push(format!("{at}: a bare reply code: {line}"));
            }
        }
        for (j, _) in c.match_indices("ARGV[") {
            if starts_with_number(&c[j + "ARGV[".len()..]) {
                out.push(format!("{at}: an ARGV offset not from the layout: {line}"));
            }
        }
        for (j, _) in c.match_indices("unpack(ARGV,") {
            if starts_with_number(&c[j + "unpack(ARGV,".len()..]) {
                out.push(format!("{at}: an ARGV offset not from the layout: {line}"));
            }
        }
        if c.trim_start().starts_with("for ") && c.contains("#ARGV") {
            if let Some(eq) = c.find('=') {
                if starts_with_number(&c[eq + 1..]) {
                    out.push(format!("{at}: a loop over ARGV from a number: {line}"));
                }
            }
        }
        let t = c.trim_start();
        if let Some(decl) = t.strip_prefix("local ") {
            let decl = decl.strip_prefix("function ").unwrap_or(decl);
            let (names, value) = match decl.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (decl.split('(').next().unwrap_or(decl), None),
            };
            for n in names.split(',').map(str::trim) {
                if header_names.iter().any(|h| h == n) {
                    out.push(format!("{at}: `{n}` is the header's: {line}"));
                }
                if is_constant_name(n) && value.is_some_and(starts_with_number) {
                    out.push(format!(
                        "{at}: a constant of the script's own (`{n}`): {line}"
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn no_script_types_a_name_a_marker_a_code_or_an_offset() {
    let specs: Vec<&ArgSpec> = script_args::ALL.to_vec();
    let mut all = Vec::new();
    for (file, text) in scripts() {
        // The prelude is part of every script: it is checked against the common names.
        let spec = specs
            .iter()
            .find(|s| s.file == file)
            .copied()
            .unwrap_or(&script_args::probe::SPEC);
        all.extend(findings(&file, &text, &lua_header::names(spec)));
    }
    assert!(
        all.is_empty(),
        "scripts type what the layout names:\n{}",
        all.join("\n")
    );
}

#[test]
fn every_script_has_a_layout_and_every_layout_a_script() {
    let files: Vec<String> = scripts()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| f != "prelude.lua")
        .collect();
    for f in &files {
        assert!(
            script_args::ALL.iter().any(|s| s.file == f),
            "{f} has no argument layout in layout/script_args.rs"
        );
    }
    for s in script_args::ALL {
        assert!(files.iter().any(|f| f == s.file), "no script {}", s.file);
    }
}

#[test]
fn the_scan_catches_each_kind() {
    let names = lua_header::names(&script_args::write::SPEC);
    let bad = [
        "local x = redis.call('HGET', KEYS[1], '__m')",
        "if m == 'ended' then end",
        "if string.sub(m, 1, 8) == \"retired \" then end",
        "return {-3}",
        "if x then return 0 end",
        "local d = ARGV[1]",
        "local d = ARGV[ 2 ]",
        "redis.call('HMGET', k, unpack(ARGV, 3))",
        "for i = 3, #ARGV do end",
        "local GONE, MOVED = 0, -3",
        "local FIRST = 18",
        "local A_MODE = 2",
        "local F_MOVING = 'x'",
    ];
    for b in bad {
        assert!(!findings("t.lua", b, &names).is_empty(), "not caught: {b}");
    }
    let good = [
        "-- the 'ended' mark (a comment)",
        "return {MOVED}",
        "return {DONE, incr, 0, user or '', now}",
        "return out",
        "local mode = ARGV[A_MODE]",
        "for i = A_REST, #ARGV do end",
        "local f = ARGV[at + 1]",
        "redis.call('HMGET', k, unpack(ARGV, A_REST))",
        "local n = 0",
        "if is_ended(m) then return {GONE} end",
    ];
    for g in good {
        assert!(
            findings("t.lua", g, &names).is_empty(),
            "wrongly caught: {g}"
        );
    }
}

#[test]
fn no_script_has_a_comment_marker_inside_a_string() {
    // `code()` cuts at the first `--`: a string holding one would hide the rest of its line.
    for (file, text) in scripts() {
        for (i, line) in text.lines().enumerate() {
            let c = code(line);
            assert!(
                c.matches('\'').count().is_multiple_of(2)
                    && c.matches('"').count().is_multiple_of(2),
                "{file}:{}: `--` inside a string? {line}",
                i + 1
            );
        }
    }
}
