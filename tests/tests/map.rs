//! The map in CONTRIBUTING.md stays complete: every source file of the crates, the examples
//! and the test harness is named in it with its job, every suite in its suites table, and
//! nothing it names is gone. (Issue #24: a map that was 40% incomplete.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every file under `dir` (relative to the repository root) whose extension is in `exts`.
fn files(dir: &str, exts: &[&str]) -> BTreeSet<String> {
    fn walk(root: &Path, p: &Path, exts: &[&str], out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, exts, out);
            } else if exts.iter().any(|x| name.ends_with(&format!(".{x}"))) {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = root();
    let mut out = BTreeSet::new();
    walk(&root, &root.join(dir), exts, &mut out);
    out
}

/// The files the map names: in its fenced block, a line without indentation ending in `/`
/// starts a folder; an indented line names a file under it by its path from that folder
/// (first word), followed by its job.
fn mapped(contributing: &str) -> (BTreeSet<String>, Vec<String>) {
    let start = contributing
        .find("## The map")
        .expect("CONTRIBUTING.md has a '## The map' section");
    let block = &contributing[start..];
    let open = block.find("```").expect("the map is a fenced block") + 3;
    let body = &block[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").expect("the map's block is closed")];
    let (mut named, mut jobless) = (BTreeSet::new(), Vec::new());
    let mut folder = String::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let first = line.split_whitespace().next().unwrap();
            assert!(
                first.ends_with('/'),
                "map line {line:?}: a folder ends with '/'"
            );
            folder = first.to_string();
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if !(first.ends_with(".rs") || first.ends_with(".lua")) {
            continue; // a job's continuation line
        }
        if words.next().is_none() {
            jobless.push(format!("{folder}{first}"));
        }
        named.insert(format!("{folder}{first}"));
    }
    (named, jobless)
}

#[test]
fn every_source_file_is_in_the_map_with_its_job() {
    let text = std::fs::read_to_string(root().join("CONTRIBUTING.md")).unwrap();
    let (named, jobless) = mapped(&text);
    let mut present = BTreeSet::new();
    for dir in ["crates", "examples", "tests/support"] {
        present.extend(files(dir, &["rs", "lua"]));
    }
    let missing: Vec<_> = present.difference(&named).collect();
    let stale: Vec<_> = named.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "files missing from CONTRIBUTING.md's map (add each with its job): {missing:#?}"
    );
    assert!(
        stale.is_empty(),
        "the map names files that are gone: {stale:#?}"
    );
    assert!(
        jobless.is_empty(),
        "map entries without a job: {jobless:#?}"
    );
}

#[test]
fn every_suite_is_in_the_suites_table() {
    let text = std::fs::read_to_string(root().join("CONTRIBUTING.md")).unwrap();
    let rows: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|f| f.ends_with(".rs"))
        .map(str::to_string)
        .collect();
    let suites: BTreeSet<String> = files("tests/tests", &["rs"])
        .into_iter()
        .map(|p| p.trim_start_matches("tests/tests/").to_string())
        .collect();
    let missing: Vec<_> = suites.difference(&rows).collect();
    let stale: Vec<_> = rows.difference(&suites).collect();
    assert!(
        missing.is_empty(),
        "suites missing from CONTRIBUTING.md's table: {missing:#?}"
    );
    assert!(
        stale.is_empty(),
        "the suites table names files that are gone: {stale:#?}"
    );
}

#[test]
fn file_names_are_unique_within_each_crate() {
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let krate = krate.unwrap().path();
        let src = krate.strip_prefix(root()).unwrap().join("src");
        let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
        for f in files(&src.to_string_lossy(), &["rs", "lua"]) {
            let name = f.rsplit('/').next().unwrap().to_string();
            seen.entry(name).or_default().push(f);
        }
        let twice: Vec<_> = seen.values().filter(|v| v.len() > 1).collect();
        assert!(
            twice.is_empty(),
            "file names used twice in one crate: {twice:#?}"
        );
    }
}
