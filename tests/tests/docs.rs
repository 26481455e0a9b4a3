//! The documentation stays what issue #27 made it: a README a newcomer reads in five minutes,
//! examples that an app depending on one adapter crate can copy, links that lead somewhere,
//! and no placeholder metadata. (The examples themselves are compiled as doc tests of
//! `tessera-axum` and `tessera-actix`; this checks what a compiler does not.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 250;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under the repository root whose name satisfies `keep`, relative to the root
/// (build output, hidden folders and the docs folder's link inside tessera-axum left out).
fn walk(keep: &dyn Fn(&str) -> bool) -> BTreeSet<String> {
    fn go(root: &Path, dir: &Path, keep: &dyn Fn(&str) -> bool, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            if e.file_type().unwrap().is_symlink() {
                continue; // crates/tessera-axum/docs: the same files as docs/
            }
            if path.is_dir() {
                go(root, &path, keep, out);
            } else if keep(&name) {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = root();
    let mut out = BTreeSet::new();
    go(&root, &root, keep, &mut out);
    out
}

/// The README, the guides (`docs/*.md`) and the crates' READMEs: the files whose code blocks
/// users copy (and rustdoc compiles).
fn user_docs() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    files.extend(walk(&|n| n.ends_with(".md")).into_iter().filter(|f| {
        (f.starts_with("docs/") && f.matches('/').count() == 1)
            || (f.starts_with("crates/") && f.ends_with("/README.md"))
    }));
    files
}

/// A fenced code block: its info string (`rust,no_run`), its text, its first line's number.
struct Block {
    info: String,
    text: String,
    line: usize,
}

/// The text outside fenced blocks (fences blanked, line numbers kept) and the blocks.
fn split_fences(md: &str) -> (String, Vec<Block>) {
    let (mut prose, mut blocks) = (String::new(), Vec::new());
    let mut open: Option<Block> = None;
    for (i, line) in md.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match (&mut open, fence) {
            (None, true) => {
                open = Some(Block {
                    info: line.trim_start()[3..].trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), true) => blocks.push(open.take().unwrap()),
            (Some(b), false) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, false) => prose.push_str(line),
        }
        prose.push('\n');
    }
    assert!(open.is_none(), "a fenced block is never closed");
    (prose, blocks)
}

/// rustdoc compiles a block without an info string, or one that starts with `rust` or a
/// doctest attribute, as Rust.
fn is_rust(info: &str) -> bool {
    let first = info.split([',', ' ']).next().unwrap_or("");
    matches!(
        first,
        "" | "rust" | "no_run" | "should_panic" | "compile_fail" | "ignore" | "edition2021"
    )
}

/// `` `code` `` spans blanked (links in them are not links).
fn without_code_spans(prose: &str) -> String {
    let mut out = String::with_capacity(prose.len());
    let mut in_code = false;
    for c in prose.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else if in_code && c != '\n' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The targets of inline links and images, `[text](target)`, and of reference definitions,
/// `[label]: target`, with their line numbers.
fn link_targets(md: &str) -> Vec<(usize, String)> {
    let (prose, _) = split_fences(md);
    let prose = without_code_spans(&prose);
    let mut out = Vec::new();
    for (i, line) in prose.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((i + 1, target.trim_matches(['<', '>']).to_string()));
            rest = &after[end..];
        }
        let t = line.trim_start();
        if t.starts_with('[') {
            if let Some(at) = t.find("]: ") {
                out.push((i + 1, t[at + 3..].trim().to_string()));
            }
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// GitHub's anchors for a Markdown file's headings: the heading's text lowercased, every
/// character but letters, digits, spaces, `-` and `_` dropped, spaces made `-`; a repeated
/// one gets `-1`, `-2`, ...
fn anchors(md: &str) -> BTreeSet<String> {
    let (prose, _) = split_fences(md);
    let mut seen = BTreeSet::new();
    for line in prose.lines() {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        // The rendered text: a link shows its text, not its target.
        let mut text = String::new();
        let mut rest = line[hashes..].trim();
        while let Some(at) = rest.find("](") {
            text.push_str(&rest[..at]);
            rest = rest[at..].split_once(')').map_or("", |(_, r)| r);
        }
        text.push_str(rest);
        let slug: String = text
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

#[test]
fn the_readme_is_read_in_five_minutes() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, at most {README_MAX_LINES}: move the detail to a guide \
         under docs/ and link it"
    );
}

/// An app depends on one adapter crate (or on tessera-tower-sessions), which re-exports what
/// it uses: an example that names `tessera_core` as a crate of its own does not compile there,
/// and one that reaches it through the adapter (`tessera_axum::tessera_core::..`) shows a
/// path no app needs.
#[test]
fn examples_import_from_the_adapter_never_from_tessera_core() {
    let mut found = Vec::new();
    for file in user_docs() {
        if file == "crates/tessera-core/README.md" {
            continue; // the core crate's own README: tools that use the core directly
        }
        let (_, blocks) = split_fences(&read(&file));
        for b in blocks.iter().filter(|b| is_rust(&b.info)) {
            for (i, line) in b.text.lines().enumerate() {
                let names_it = line.match_indices("tessera_core").any(|(at, _)| {
                    !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if names_it {
                    found.push(format!("{file}:{}: {}", b.line + 1 + i, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "examples naming tessera_core (import from tessera_axum / tessera_actix / \
         tessera_tower_sessions instead, which re-export what apps use): {found:#?}"
    );
}

/// Every relative link of the README and the guides leads to a file that exists, and an
/// `#anchor` to a heading of it.
#[test]
fn relative_links_lead_somewhere() {
    let mut broken = Vec::new();
    let files: Vec<String> = user_docs()
        .into_iter()
        .filter(|f| !f.starts_with("crates/"))
        .collect();
    for file in &files {
        let dir = Path::new(file).parent().unwrap();
        for (line, target) in link_targets(&read(file)) {
            if is_external(&target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let rel = if path.is_empty() {
                PathBuf::from(file)
            } else {
                dir.join(path)
            };
            let full = root().join(&rel);
            if !full.exists() {
                broken.push(format!("{file}:{line}: {target} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_md = full.extension().is_some_and(|x| x == "md");
                if !is_md || !anchors(&std::fs::read_to_string(&full).unwrap()).contains(anchor) {
                    broken.push(format!("{file}:{line}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// On crates.io a crate's README is shown on its own: a relative link leads nowhere there.
#[test]
fn crate_readmes_are_self_contained() {
    let mut relative = Vec::new();
    for file in user_docs().into_iter().filter(|f| f.starts_with("crates/")) {
        for (line, target) in link_targets(&read(&file)) {
            if !is_external(&target) {
                relative.push(format!("{file}:{line}: {target}"));
            }
        }
    }
    assert!(
        relative.is_empty(),
        "relative links in crate READMEs (crates.io shows them without the repository; \
         link a published page or say it in words): {relative:#?}"
    );
}

/// No placeholder address in the manifests or the documentation.
#[test]
fn no_placeholder_metadata() {
    let placeholder = ["example", "invalid"].join(".");
    let files = walk(&|n| n == "Cargo.toml" || n.ends_with(".md"));
    assert!(files.contains("Cargo.toml") && files.contains("README.md"));
    let found: Vec<_> = files
        .iter()
        .filter(|f| read(f).contains(&placeholder))
        .collect();
    assert!(found.is_empty(), "{placeholder} in: {found:#?}");
}

/// Every Rust block of the README, the guides and the crate READMEs is compiled as a doc test
/// (`no_run` for what needs a server): none is `ignore`d, and none lacks an info string
/// (rustdoc would compile it as Rust; say `text`, `sh` or `toml`).
#[test]
fn no_example_escapes_the_compiler() {
    let mut found = Vec::new();
    for file in user_docs() {
        let (_, blocks) = split_fences(&read(&file));
        for b in blocks {
            if b.info.split([',', ' ']).any(|w| w == "ignore") {
                found.push(format!("{file}:{}: ```{} (ignored)", b.line, b.info));
            } else if b.info.is_empty() {
                found.push(format!("{file}:{}: ``` without a language", b.line));
            }
        }
    }
    assert!(found.is_empty(), "blocks that are not compiled: {found:#?}");
}

#[test]
fn the_anchor_rule_is_githubs() {
    let md = "# A `code` title\n## Topologies: one config, one URL\n### A failover's blast \
              radius\n## Dup\n## Dup\n```text\n# not a heading\n```\n## [Linked](x.md) text\n";
    let got = anchors(md);
    for a in [
        "a-code-title",
        "topologies-one-config-one-url",
        "a-failovers-blast-radius",
        "dup",
        "dup-1",
        "linked-text",
    ] {
        assert!(got.contains(a), "{a} not in {got:?}");
    }
    assert!(!got.contains("not-a-heading"));
}
