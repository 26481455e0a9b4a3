//! Each script's arguments: the position in `ARGV` of every fixed argument, named once here.
//! The scripts read them through the generated header (`ARGV[A_<NAME>]`, and `A_REST` for the
//! first of the variable part), and the Rust side places each value at its named position
//! with [`Argv`], so the two cannot drift.
//!
//! A script that writes takes a deadline first (`ARGV[A_DEADLINE]`, added by the caller of
//! every write script; see `past_deadline` in the prelude); its own arguments follow.

/// One script's argument layout.
#[derive(Debug)]
pub(crate) struct ArgSpec {
    /// The script's file in `store/redis/scripts/`.
    pub(crate) file: &'static str,
    /// Whether `ARGV[1]` is the write deadline.
    pub(crate) deadline: bool,
    /// The fixed arguments' names, in order (`A_<name>` in Lua).
    pub(crate) names: &'static [&'static str],
    /// Where the variable part starts (`A_REST`): one past the last fixed argument.
    pub(crate) rest: usize,
}

impl ArgSpec {
    /// The `ARGV` position of the first argument the caller's list holds (after the deadline
    /// for a write script).
    pub(crate) const fn first(&self) -> usize {
        if self.deadline {
            2
        } else {
            1
        }
    }

    /// The fixed arguments with their `ARGV` positions.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        let first = self.first();
        self.names
            .iter()
            .enumerate()
            .map(move |(i, n)| (*n, first + i))
    }
}

/// The `ARGV` position of a fixed argument of the script `S` (each script module's `Script`):
/// [`Argv::set`] takes only its own script's positions, so one script's constant cannot be
/// used for another's arguments.
pub(crate) struct Pos<S>(usize, std::marker::PhantomData<fn() -> S>);

impl<S> Pos<S> {
    const fn new(at: usize) -> Self {
        Pos(at, std::marker::PhantomData)
    }

    /// The position, 1-based as in Lua.
    pub(crate) const fn at(&self) -> usize {
        self.0
    }
}

impl<S> Clone for Pos<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Pos<S> {}

/// Declares one script's arguments: a module with a constant per fixed argument (its `ARGV`
/// position), `REST`, `SPEC` and `argv()`. Positions follow the order written, from 2 after
/// a deadline or 1 without.
macro_rules! script_args {
    ($(#[$doc:meta])* $name:ident = $file:literal, deadline: $deadline:literal,
     [$($arg:ident),* $(,)?]) => {
        $(#[$doc])*
        pub(crate) mod $name {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms, dead_code)]
            enum Slot {
                $($arg,)*
                REST_,
            }
            const FIRST: usize = if $deadline { 2 } else { 1 };
            /// The script, as a type: its positions are `Pos<Script>`.
            #[derive(Debug)]
            pub(crate) enum Script {}
            $(
                #[doc = concat!("`ARGV[A_", stringify!($arg), "]`.")]
                #[allow(dead_code)]
                pub(crate) const $arg: super::Pos<Script> =
                    super::Pos::new(FIRST + Slot::$arg as usize);
            )*
            /// Where the variable part starts (`A_REST`).
            #[allow(dead_code)]
            pub(crate) const REST: usize = FIRST + Slot::REST_ as usize;
            /// The layout.
            pub(crate) const SPEC: super::ArgSpec = super::ArgSpec {
                file: $file,
                deadline: $deadline,
                names: &[$(stringify!($arg)),*],
                rest: REST,
            };
            /// Empty arguments for this script, with room for `rest` variable values.
            #[allow(dead_code)]
            pub(crate) fn argv<V>(rest: usize) -> super::Argv<V, Script> {
                super::Argv::new(&SPEC, rest)
            }
        }
    };
}

/// `ARGV[A_DEADLINE]`: a write script's deadline, server ms (0 = none).
pub(crate) const DEADLINE: usize = 1;

script_args!(
    /// load.lua (no deadline: it only refreshes the TTL).
    load = "load.lua", deadline: false,
    [IDLE_MS, TOUCH_MS, ABSOLUTE_MS, LONGEST_MS]
);
script_args!(
    /// write.lua; then nset field/value pairs, ndel fields, nexp field/lifetime pairs, nrec
    /// trail entries.
    write = "write.lua", deadline: true,
    [MODE, IDLE_MS, ABSOLUTE_MS, CREATED_MS, NSET, NDEL, INCR_FIELD, INCR_BY, TOUCH_MS,
     FREEZE_MS, MAX_FIELDS, NATIVE, NEXP, NREC, TRAIL_MAX, LONGEST_MS]
);
script_args!(
    /// create.lua (with a second key, the user's index: `MEMBER` .. `LEAVING` as index_add.lua's);
    /// then nrec trail entries, nexp field/lifetime pairs, field/value pairs.
    create = "create.lua", deadline: true,
    [IDLE_MS, ABSOLUTE_MS, CREATED_MS, NATIVE, NEXP, NREC, TRAIL_MAX, MEMBER, BOUND_MS,
     MAX_SESSIONS, LEAVING]
);
script_args!(
    /// index_add.lua.
    index_add = "index_add.lua", deadline: true,
    [MEMBER, BOUND_MS, MAX_SESSIONS, LEAVING]
);
script_args!(
    /// freeze.lua.
    freeze = "freeze.lua", deadline: true,
    [NEW_MEMBER, FREEZE_MS, IDLE_MS, ABSOLUTE_MS]
);
script_args!(
    /// release.lua.
    release = "release.lua", deadline: true,
    [TOKEN, ACTION, TOMBSTONE_MS]
);
script_args!(
    /// index_prune.lua; then the members.
    index_prune = "index_prune.lua", deadline: true,
    [MAX_SCORE]
);
script_args!(
    /// end_if.lua.
    end_if = "end_if.lua", deadline: true,
    [FIELD, EXPECTED, TOMBSTONE_MS, ANY]
);
script_args!(
    /// take.lua; then the indexed fields' names.
    take = "take.lua", deadline: true,
    [MARK_MS]
);
script_args!(
    /// field_add.lua.
    field_add = "field_add.lua", deadline: true,
    [MEMBER, BOUND_MS]
);
script_args!(
    /// events.lua; then the counted groups (track, confirm, untrack, rescore, events).
    events = "events.lua", deadline: true,
    [MAXLEN, INSTANCE]
);
script_args!(
    /// events_due.lua.
    events_due = "events_due.lua", deadline: true,
    [INSTANCE, LEASE_MS, LIMIT]
);
script_args!(
    /// events_read.lua (reads only: no deadline).
    events_read = "events_read.lua", deadline: false,
    [START, COUNT]
);
script_args!(
    /// probe.lua (reads only: no deadline, no arguments).
    probe = "probe.lua", deadline: false,
    []
);
script_args!(
    /// retire_legacy.lua.
    retire_legacy = "retire_legacy.lua", deadline: true,
    [EXPECTED, GRACE_MS]
);
script_args!(
    /// set_if_absent.lua.
    set_if_absent = "set_if_absent.lua", deadline: true,
    [FIELD, VALUE, FREEZE_MS]
);

/// Every script's layout.
#[cfg(test)]
pub(crate) const ALL: &[&ArgSpec] = &[
    &load::SPEC,
    &write::SPEC,
    &create::SPEC,
    &index_add::SPEC,
    &freeze::SPEC,
    &release::SPEC,
    &index_prune::SPEC,
    &end_if::SPEC,
    &take::SPEC,
    &field_add::SPEC,
    &events::SPEC,
    &events_due::SPEC,
    &events_read::SPEC,
    &probe::SPEC,
    &retire_legacy::SPEC,
    &set_if_absent::SPEC,
];

/// A script's arguments as the caller sends them (without the deadline, which the caller of
/// every write script adds): each fixed value placed at its named position, then the
/// variable part in order.
///
/// ```text
/// let mut a = freeze::argv(0);
/// a.set(freeze::NEW_MEMBER, member);
/// ...
/// let values = a.finish();
/// ```
#[derive(Debug)]
pub(crate) struct Argv<V, S> {
    spec: &'static ArgSpec,
    fixed: Vec<Option<V>>,
    rest: Vec<V>,
    script: std::marker::PhantomData<fn() -> S>,
}

impl<V, S> Argv<V, S> {
    fn new(spec: &'static ArgSpec, rest: usize) -> Self {
        Argv {
            spec,
            fixed: std::iter::repeat_with(|| None)
                .take(spec.names.len())
                .collect(),
            rest: Vec::with_capacity(rest),
            script: std::marker::PhantomData,
        }
    }

    /// Places `v` at its named position (one of the script's constants).
    pub(crate) fn set(&mut self, at: Pos<S>, v: impl Into<V>) -> &mut Self {
        // In range by construction: `Pos<S>` is made only by this script's module.
        self.fixed[at.at() - self.spec.first()] = Some(v.into());
        self
    }

    /// Appends `v` to the variable part (from `REST` on).
    pub(crate) fn push(&mut self, v: impl Into<V>) -> &mut Self {
        self.rest.push(v.into());
        self
    }

    /// The values in `ARGV` order.
    ///
    /// # Panics
    /// When a fixed argument was not set: a programming error.
    pub(crate) fn finish(self) -> Vec<V> {
        let file = self.spec.file;
        let mut out = Vec::with_capacity(self.fixed.len() + self.rest.len());
        for (i, v) in self.fixed.into_iter().enumerate() {
            out.push(
                v.unwrap_or_else(|| panic!("{file}: argument {} not set", self.spec.names[i])),
            );
        }
        out.extend(self.rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_declared_order() {
        assert_eq!(write::MODE.at(), 2);
        assert_eq!(write::LONGEST_MS.at(), 17);
        assert_eq!(write::REST, 18);
        assert_eq!(create::REST, 13);
        assert_eq!(load::IDLE_MS.at(), 1);
        assert_eq!(take::REST, 3);
        assert_eq!(probe::REST, 1);
        for spec in ALL {
            let pos: Vec<usize> = spec.positions().map(|(_, p)| p).collect();
            let want: Vec<usize> = (spec.first()..spec.rest).collect();
            assert_eq!(pos, want, "{}", spec.file);
        }
        let files: std::collections::HashSet<_> = ALL.iter().map(|s| s.file).collect();
        assert_eq!(files.len(), ALL.len());
    }

    #[test]
    fn argv_places_values_by_name() {
        let mut a = freeze::argv::<String>(0);
        a.set(freeze::ABSOLUTE_MS, "abs")
            .set(freeze::NEW_MEMBER, "m")
            .set(freeze::IDLE_MS, "idle")
            .set(freeze::FREEZE_MS, "f");
        assert_eq!(a.finish(), ["m", "f", "idle", "abs"]);
        let mut t = take::argv::<String>(2);
        t.set(take::MARK_MS, "0").push("a").push("b");
        assert_eq!(t.finish(), ["0", "a", "b"]);
    }

    #[test]
    #[should_panic(expected = "not set")]
    fn a_missing_argument_is_caught() {
        let mut a = freeze::argv::<String>(0);
        a.set(freeze::NEW_MEMBER, "m");
        let _ = a.finish();
    }
}
