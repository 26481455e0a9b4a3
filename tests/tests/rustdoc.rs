//! Every public method of `Session`, `SessionManager` and `SessionConfigBuilder` has a code
//! example in its rustdoc (compiled by `cargo test -p tessera-core --doc`), and the `Session`
//! page lists the everyday calls first. (Issue #27: 4 of 31 `Session` methods had one, and
//! the page opened with `logout_all`, `revoke` and `csrf_token`.)
//!
//! A scan of the source as rustfmt lays it out: an inherent `impl` block of one of the three
//! types starts at column 0 and ends at the next `}` there; its methods are `pub fn` /
//! `pub async fn` at four spaces, under their `///` lines and attributes.

use std::path::{Path, PathBuf};

const TYPES: [&str; 3] = ["Session", "SessionManager", "SessionConfigBuilder"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn src() -> PathBuf {
    root().join("crates/tessera-core/src")
}

/// One public method of one of [`TYPES`], as the scan found it.
#[derive(Debug)]
struct Method {
    ty: String,
    name: String,
    /// `path:line` of its `fn` line, from the repository root.
    at: String,
    has_example: bool,
}

/// Whether a fence's info string (what follows the opening backticks) makes a block that
/// rustdoc compiles: none, `rust`, `no_run`, `should_panic`, `compile_fail` or an edition. An
/// `ignore`d block or another language's is not an example.
fn compiled(info: &str) -> bool {
    info.split(',').map(str::trim).all(|t| {
        matches!(t, "" | "rust" | "no_run" | "should_panic" | "compile_fail")
            || t.starts_with("edition")
    })
}

/// Whether `doc` (the `///` lines of one item, top down, without the slashes) holds a
/// compiled example: a block whose opening fence says so (a closing fence says nothing).
fn has_example(doc: &[&str]) -> bool {
    let mut open = false;
    for line in doc {
        let Some(info) = line.trim().strip_prefix("```") else {
            continue;
        };
        if !open && compiled(info) {
            return true;
        }
        open = !open;
    }
    false
}

/// The type an inherent impl line names, if it is one of [`TYPES`] (`impl Session {`,
/// `impl super::Session {`).
fn impl_of(line: &str) -> Option<&'static str> {
    let rest = line.strip_prefix("impl ")?.strip_suffix('{')?.trim();
    let name = rest.rsplit("::").next()?;
    TYPES.into_iter().find(|t| *t == name)
}

/// The public methods of [`TYPES`] in `text`, in source order.
fn methods_in(text: &str, rel: &str) -> Vec<Method> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut ty: Option<&str> = None;
    for (i, line) in lines.iter().enumerate() {
        if ty.is_none() {
            ty = impl_of(line);
            continue;
        }
        if *line == "}" {
            ty = None;
            continue;
        }
        let Some(sig) = line.strip_prefix("    pub ") else {
            continue;
        };
        let sig = sig
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ");
        let Some(sig) = sig.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // Its attributes and `///` lines, bottom up.
        let (mut doc, mut hidden) = (Vec::new(), false);
        for above in lines[..i].iter().rev() {
            let above = above.trim_start();
            if let Some(d) = above.strip_prefix("///") {
                doc.push(d);
            } else if above.starts_with("#[") {
                hidden |= above.contains("doc(hidden)") || above.contains("cfg(test)");
            } else {
                break;
            }
        }
        doc.reverse();
        if !hidden {
            out.push(Method {
                ty: ty.unwrap().to_string(),
                name,
                at: format!("{rel}:{}", i + 1),
                has_example: has_example(&doc),
            });
        }
    }
    out
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The public methods of [`TYPES`] in every file of tessera-core.
fn all_methods() -> Vec<Method> {
    let root = root();
    rust_files(&src())
        .into_iter()
        .flat_map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            methods_in(&std::fs::read_to_string(&p).unwrap(), &rel)
        })
        .collect()
}

#[test]
fn every_public_method_has_an_example() {
    let methods = all_methods();
    // The scan reads what it is meant to (a layout it no longer understands finds nothing).
    for (ty, name) in [
        ("Session", "get"),
        ("Session", "login"),
        ("SessionManager", "new"),
        ("SessionConfigBuilder", "build"),
    ] {
        assert!(
            methods.iter().any(|m| m.ty == ty && m.name == name),
            "the scan did not find {ty}::{name}: has the layout of tessera-core changed?"
        );
    }
    let missing: Vec<String> = methods
        .iter()
        .filter(|m| !m.has_example)
        .map(|m| format!("{}::{} ({})", m.ty, m.name, m.at))
        .collect();
    assert!(
        missing.is_empty(),
        "public methods without a code example in their rustdoc (add a ``` block of what a \
         handler or an app's start-up does with it, run on Store::memory(); `no_run` only for \
         what needs a Redis server; never `ignore`):\n{}",
        missing.join("\n")
    );
}

/// The `Session` methods in the order of its rustdoc page: rustdoc lists the inherent impl
/// blocks module by module (a module's submodules, in the order declared, then its own
/// items), methods in source order within each.
fn page_order(file: &Path, out: &mut Vec<String>) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let children = file.with_extension("");
    for line in text.lines() {
        let decl = ["pub(crate) ", "pub(super) ", "pub "]
            .into_iter()
            .find_map(|v| line.strip_prefix(v))
            .unwrap_or(line);
        let Some(m) = decl.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) else {
            continue;
        };
        let child = children.join(format!("{m}.rs"));
        let child = if child.exists() {
            child
        } else {
            children.join(m).join("mod.rs")
        };
        page_order(&child, out);
    }
    out.extend(
        methods_in(&text, "")
            .into_iter()
            .filter(|m| m.ty == "Session")
            .map(|m| m.name),
    );
}

#[test]
fn the_session_page_starts_with_the_everyday_calls() {
    let mut order = Vec::new();
    page_order(&src().join("session.rs"), &mut order);
    let everyday = [
        "get",
        "insert",
        "remove",
        "increment",
        "login",
        "destroy",
        "logout_all",
        "list_sessions",
        "revoke",
        "set_expiry",
        "csrf_token",
    ];
    let at: Vec<Option<usize>> = everyday
        .iter()
        .map(|n| order.iter().position(|m| m == n))
        .collect();
    assert!(
        order.first().map(String::as_str) == Some("get")
            && at.iter().all(Option::is_some)
            && at.windows(2).all(|w| w[0] < w[1]),
        "the Session page (rustdoc lists impl blocks in the order of the `mod` declarations in \
         crates/tessera-core/src/session.rs, then by position in each file) must open with \
         {everyday:?} in that order; it is now:\n{order:?}"
    );
}
