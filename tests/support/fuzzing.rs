//! What the fuzz suite (`tests/tests/fuzz.rs`) shares: its case count, and an allocator that
//! measures the most a parse held at once, so "no unbounded allocation" is asserted, not hoped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A runner for proptest's configured number of cases (`PROPTEST_CASES`: 10,000 from
/// `.cargo/config.toml`, 1,000,000 under `scripts/fuzz.sh`), failures shrunk and reported, not
/// persisted (the input is printed; a regression becomes a named test).
pub fn runner() -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

thread_local! {
    // Const-initialised, no destructor: safe to touch from inside the allocator.
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting the bytes this thread holds and their peak (install it with
/// `#[global_allocator]` in the test binary).
pub struct Counting;

fn grew(n: usize) {
    let live = LIVE.with(|l| {
        let v = l.get() + n;
        l.set(v);
        v
    });
    PEAK.with(|p| p.set(p.get().max(live)));
}

fn shrank(n: usize) {
    // A block freed on another thread than the one that allocated it: saturate, never wrap.
    LIVE.with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Runs `f` and returns what it gave with the most bytes this thread allocated at once while
/// it ran, above what it held before (meaningful only with [`Counting`] installed).
pub fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, PEAK.with(Cell::get) - base)
}
