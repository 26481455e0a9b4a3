//! The header prepended to every script (before the prelude and the script's own file): the
//! reserved field names, the `__` prefix, the marker values, the reply codes and the script's
//! argument positions, all from this module's tables, as Lua locals. Scripts are loaded once
//! (`EVALSHA`), so the header costs nothing per request.

use super::script_args::{ArgSpec, DEADLINE};
use super::{fields, marker, replies};
use std::fmt::Write;

/// The header of the script laid out by `args`.
pub(crate) fn header(args: &ArgSpec) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(
        "-- Generated from tessera-core's layout module (src/layout/): every reserved name,\n\
         -- marker, reply code and argument position a script uses. Scripts never type them.\n",
    );
    let strings = |out: &mut String, pairs: &[(&str, &str)]| {
        locals(out, pairs.iter().map(|(n, v)| (n.to_string(), quoted(v))))
    };
    strings(&mut out, &[("RESERVED_PREFIX", fields::RESERVED_PREFIX)]);
    strings(&mut out, fields::LUA);
    strings(&mut out, marker::LUA);
    locals(
        &mut out,
        replies::LUA
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    let deadline = if args.deadline {
        DEADLINE.to_string()
    } else {
        "false".to_string()
    };
    locals(&mut out, [("A_DEADLINE".to_string(), deadline)].into_iter());
    locals(
        &mut out,
        args.positions()
            .map(|(n, p)| (format!("A_{n}"), p.to_string())),
    );
    locals(
        &mut out,
        [("A_REST".to_string(), args.rest.to_string())].into_iter(),
    );
    out
}

/// The Lua names the header defines for the script laid out by `args`.
#[cfg(test)]
pub(crate) fn names(args: &ArgSpec) -> Vec<String> {
    let mut out: Vec<String> = ["RESERVED_PREFIX", "A_DEADLINE", "A_REST"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    out.extend(fields::LUA.iter().map(|(n, _)| n.to_string()));
    out.extend(marker::LUA.iter().map(|(n, _)| n.to_string()));
    out.extend(replies::LUA.iter().map(|(n, _)| n.to_string()));
    out.extend(args.positions().map(|(n, _)| format!("A_{n}")));
    out
}

/// `local a, b = 1, 2` (nothing for no names).
fn locals(out: &mut String, pairs: impl Iterator<Item = (String, String)>) {
    let (names, values): (Vec<String>, Vec<String>) = pairs.unzip();
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "local {} = {}", names.join(", "), values.join(", "));
}

/// A Lua string literal of `v` (the layout's values are plain text: no quote, backslash or
/// line break, checked by a test).
fn quoted(v: &str) -> String {
    format!("'{v}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::script_args;

    #[test]
    fn values_need_no_escaping() {
        let all = fields::LUA
            .iter()
            .chain(marker::LUA)
            .map(|(_, v)| *v)
            .chain([fields::RESERVED_PREFIX]);
        for v in all {
            assert!(
                !v.contains(['\'', '\\', '\n', '\r', '\0']),
                "{v:?} needs escaping in Lua"
            );
        }
    }

    #[test]
    fn the_write_header_names_its_arguments() {
        let h = header(&script_args::write::SPEC);
        assert!(h.contains("local A_DEADLINE = 1\n"), "{h}");
        assert!(h.contains("local A_REST = 18\n"), "{h}");
        assert!(h.contains("A_MODE, A_IDLE_MS"), "{h}");
        assert!(h.contains("F_MOVING"), "{h}");
        assert!(h.contains("'__m'"), "{h}");
        assert!(h.contains("MOVED"), "{h}");
        let probe = header(&script_args::probe::SPEC);
        assert!(probe.contains("local A_DEADLINE = false\n"), "{probe}");
        assert!(probe.contains("local A_REST = 1\n"), "{probe}");
        for spec in script_args::ALL {
            let n = names(spec);
            let set: std::collections::HashSet<_> = n.iter().collect();
            assert_eq!(set.len(), n.len(), "a name twice in {}'s header", spec.file);
            // Lua allows 200 locals per function; the prelude and script add their own.
            assert!(n.len() < 100, "{}: {} header names", spec.file, n.len());
        }
    }
}
