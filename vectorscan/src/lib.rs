//! Every occurrence of a set of literals in a text, in one pass over it, by Vectorscan (the
//! portable fork of Intel's Hyperscan, Debian's `libvectorscan-dev`, linked statically).
//!
//! The analysis's trigger pass looks for about 85 literals (secret prefixes, injection
//! phrases, …) in every text, ASCII case-insensitively. Teddy searchers take at most 64
//! literals each and fingerprint only four bytes a literal, so that pass was three searches
//! over a lowercased copy of the text, and half of their time went to verifying positions
//! the fingerprints let through. Vectorscan's literal matcher finds them all in one pass over
//! the text as it is, at about a third of the cost.
//!
//! Calling a C library needs `unsafe`, which the agent forbids: it lives in this crate, each
//! call with its safety argument beside it.

use std::{
    ffi::{CStr, c_char, c_int, c_uint, c_void},
    fmt,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    ptr::{NonNull, null, null_mut},
};

use thread_local::ThreadLocal;

/// The C interface used here (`hs/hs.h`).
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    /// `hs_database_t`: a compiled pattern set, read-only once compiled.
    #[repr(C)]
    pub struct Database {
        _opaque: [u8; 0],
    }

    /// `hs_scratch_t`: one scan's working memory.
    #[repr(C)]
    pub struct Scratch {
        _opaque: [u8; 0],
    }

    /// `hs_compile_error_t`.
    #[repr(C)]
    pub struct CompileError {
        pub message: *const c_char,
        pub expression: c_int,
    }

    pub const SUCCESS: c_int = 0;
    pub const MODE_BLOCK: c_uint = 1;
    pub const FLAG_CASELESS: c_uint = 1;

    pub type MatchHandler = unsafe extern "C" fn(
        id: c_uint,
        from: u64,
        to: u64,
        flags: c_uint,
        context: *mut c_void,
    ) -> c_int;

    unsafe extern "C" {
        pub fn hs_valid_platform() -> c_int;
        pub fn hs_compile_lit_multi(
            expressions: *const *const c_char,
            flags: *const c_uint,
            ids: *const c_uint,
            lens: *const usize,
            elements: c_uint,
            mode: c_uint,
            platform: *const c_void,
            db: *mut *mut Database,
            error: *mut *mut CompileError,
        ) -> c_int;
        pub fn hs_free_compile_error(error: *mut CompileError) -> c_int;
        pub fn hs_free_database(db: *mut Database) -> c_int;
        pub fn hs_alloc_scratch(db: *const Database, scratch: *mut *mut Scratch) -> c_int;
        pub fn hs_clone_scratch(src: *const Scratch, dest: *mut *mut Scratch) -> c_int;
        pub fn hs_free_scratch(scratch: *mut Scratch) -> c_int;
        pub fn hs_scan(
            db: *const Database,
            data: *const c_char,
            length: c_uint,
            flags: c_uint,
            scratch: *mut Scratch,
            on_event: MatchHandler,
            context: *mut c_void,
        ) -> c_int;
    }
}

/// Why a literal set could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The CPU lacks what Vectorscan needs (SSSE3 on x86-64).
    Platform,
    /// Vectorscan refused the set; the message is its own.
    Compile(String),
    /// Vectorscan failed with this error code (out of memory, for one).
    Code(c_int),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("this CPU cannot run Vectorscan"),
            Self::Compile(m) => write!(f, "Vectorscan cannot compile the literals: {m}"),
            Self::Code(c) => write!(f, "Vectorscan failed with error {c}"),
        }
    }
}

impl std::error::Error for Error {}

/// A compiled set of literals.
pub struct Literals {
    /// `None` for an empty set (Vectorscan compiles no set without a pattern). Boxed: the
    /// per-thread table is half a kilobyte, which a set need not carry inline.
    db: Option<Box<Database>>,
    /// Each literal's length: a match is reported by its end.
    lens: Vec<usize>,
}

impl fmt::Debug for Literals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Literals")
            .field("lens", &self.lens)
            .finish_non_exhaustive()
    }
}

/// A database and the scratch spaces scanning it.
struct Database {
    db: NonNull<ffi::Database>,
    /// The scratch space clones come from; never scanned with.
    prototype: Scratch,
    /// Each scanning thread's own scratch: a scratch serves one scan at a time.
    scratch: ThreadLocal<Scratch>,
    /// The longest literal's length: how far windows overlap.
    longest: usize,
}

// SAFETY: a compiled database is read-only: Vectorscan allows any number of concurrent scans
// of one, each with its own scratch (which `scratch` gives each thread). The prototype is
// only read, by `hs_clone_scratch`, which any thread may do while no scan uses it.
unsafe impl Send for Database {}
// SAFETY: as above.
unsafe impl Sync for Database {}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: the database came from `hs_compile_lit_multi` and is freed once; the
        // scratch spaces, dropped after this, do not refer to it.
        unsafe { ffi::hs_free_database(self.db.as_ptr()) };
    }
}

/// A scratch space.
struct Scratch(NonNull<ffi::Scratch>);

// SAFETY: a scratch space is memory Vectorscan owns, tied to no thread; `Database` hands each
// one to a single thread.
unsafe impl Send for Scratch {}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the scratch came from `hs_alloc_scratch` or `hs_clone_scratch`, is freed
        // once, and no scan uses it (its owner is being dropped).
        unsafe { ffi::hs_free_scratch(self.0.as_ptr()) };
    }
}

/// The longest text one `hs_scan` takes (its length is a C `unsigned`).
const MAX_SCAN: usize = c_uint::MAX as usize;

impl Literals {
    /// Compiles `literals` (each at least one byte), matched ASCII case-insensitively when
    /// `caseless`. Literal `i`'s occurrences are reported as `i`.
    pub fn new(literals: &[&[u8]], caseless: bool) -> Result<Self, Error> {
        let lens: Vec<usize> = literals.iter().map(|l| l.len()).collect();
        if literals.is_empty() {
            return Ok(Self { db: None, lens });
        }
        if lens.contains(&0) {
            return Err(Error::Compile("an empty literal".into()));
        }
        let count = c_uint::try_from(literals.len())
            .map_err(|_| Error::Compile("too many literals".into()))?;
        // SAFETY: takes no argument.
        if unsafe { ffi::hs_valid_platform() } != ffi::SUCCESS {
            return Err(Error::Platform);
        }
        let ptrs: Vec<*const c_char> = literals.iter().map(|l| l.as_ptr().cast()).collect();
        let flags = vec![if caseless { ffi::FLAG_CASELESS } else { 0 }; literals.len()];
        let ids: Vec<c_uint> = (0..count).collect();
        let (mut db, mut error) = (null_mut(), null_mut());
        // SAFETY: the four arrays each have `count` elements; each expression pointer is
        // valid for its length (literals may hold any byte, NUL included, since the lengths
        // are given); no platform (the running CPU's); both out-pointers are valid.
        let rc = unsafe {
            ffi::hs_compile_lit_multi(
                ptrs.as_ptr(),
                flags.as_ptr(),
                ids.as_ptr(),
                lens.as_ptr(),
                count,
                ffi::MODE_BLOCK,
                null(),
                &raw mut db,
                &raw mut error,
            )
        };
        if rc != ffi::SUCCESS {
            return Err(compile_error(error, rc));
        }
        let db = NonNull::new(db).ok_or(Error::Code(rc))?;
        let mut prototype = null_mut();
        // SAFETY: `db` is a valid database; the out-pointer is valid.
        let rc = unsafe { ffi::hs_alloc_scratch(db.as_ptr(), &raw mut prototype) };
        let prototype = NonNull::new(prototype).filter(|_| rc == ffi::SUCCESS);
        let Some(prototype) = prototype else {
            // SAFETY: compiled above, not yet owned by a `Database`.
            unsafe { ffi::hs_free_database(db.as_ptr()) };
            return Err(Error::Code(rc));
        };
        Ok(Self {
            db: Some(Box::new(Database {
                db,
                prototype: Scratch(prototype),
                scratch: ThreadLocal::new(),
                longest: lens.iter().copied().max().unwrap_or(1),
            })),
            lens,
        })
    }

    /// Calls `on(i, start)` for every occurrence of literal `i` in `text` starting at byte
    /// `start`, overlapping ones included, in the order of their ends.
    pub fn for_each(&self, text: &[u8], on: impl FnMut(usize, usize)) {
        self.for_each_windowed(text, MAX_SCAN, on);
    }

    /// [`Self::for_each`] with scans of at most `max` bytes.
    fn for_each_windowed(&self, text: &[u8], max: usize, mut on: impl FnMut(usize, usize)) {
        let Some(db) = &self.db else { return };
        scan_windows(text, max, db.longest, |window, base, after| {
            db.scan(window, &mut |id, end| {
                let end = base + end;
                if end > after {
                    on(id, end - self.lens[id]);
                }
            });
        });
    }
}

/// Splits `text` into windows of at most `max` bytes, each overlapping the one before by
/// `longest - 1` bytes so that every occurrence lies whole in some window; calls
/// `scan(window, base, after)` with the window's offset in the text and the end up to which
/// the windows before reported (an occurrence ending there or before is not new).
fn scan_windows(
    text: &[u8],
    max: usize,
    longest: usize,
    mut scan: impl FnMut(&[u8], usize, usize),
) {
    let overlap = longest.saturating_sub(1);
    // A window must reach past its overlap, or no window would be new.
    let step = max.saturating_sub(overlap).max(1);
    let mut done = 0usize;
    loop {
        let base = done.saturating_sub(overlap);
        let end = (done + step).min(text.len());
        scan(&text[base..end], base, done);
        if end == text.len() {
            return;
        }
        done = end;
    }
}

/// A compile error's message, the error freed.
fn compile_error(error: *mut ffi::CompileError, rc: c_int) -> Error {
    if error.is_null() {
        return Error::Code(rc);
    }
    // SAFETY: a non-null error from `hs_compile_lit_multi` points to a valid structure whose
    // message is a NUL-terminated string; both are read before the error is freed, once.
    let message = unsafe {
        let message = (*error).message;
        let text = if message.is_null() {
            format!("error {rc}")
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        };
        ffi::hs_free_compile_error(error);
        text
    };
    Error::Compile(message)
}

impl Database {
    /// Calls `on(id, end)` for every match in `text` (at most [`MAX_SCAN`] bytes).
    fn scan(&self, text: &[u8], on: &mut dyn FnMut(usize, usize)) {
        let scratch = self.scratch.get_or(|| {
            let mut clone = null_mut();
            // SAFETY: the prototype is a valid scratch no scan uses; the out-pointer is valid.
            let rc = unsafe { ffi::hs_clone_scratch(self.prototype.0.as_ptr(), &raw mut clone) };
            match NonNull::new(clone) {
                Some(s) if rc == ffi::SUCCESS => Scratch(s),
                _ => panic!("Vectorscan could not allocate scratch space (error {rc})"),
            }
        });
        let mut context = Context { on, panic: None };
        let length = c_uint::try_from(text.len()).expect("windows are at most MAX_SCAN bytes");
        // SAFETY: the database is valid; `text` is valid for `length` bytes; the scratch was
        // made for this database and belongs to this thread (a scan of this set started from
        // the callback would find it in use, which Vectorscan refuses with an error, and the
        // assertion below reports); `context` outlives the call and is what `on_match` expects.
        let rc = unsafe {
            ffi::hs_scan(
                self.db.as_ptr(),
                text.as_ptr().cast(),
                length,
                0,
                scratch.0.as_ptr(),
                on_match,
                (&raw mut context).cast(),
            )
        };
        if let Some(payload) = context.panic {
            resume_unwind(payload);
        }
        // A valid database, scratch and text leave no other outcome.
        assert_eq!(rc, ffi::SUCCESS, "Vectorscan scan failed");
    }
}

/// What `on_match` is handed.
struct Context<'a> {
    on: &'a mut dyn FnMut(usize, usize),
    /// A panic of `on`, carried past the C frames and resumed after them.
    panic: Option<Box<dyn std::any::Any + Send>>,
}

/// Passes a match to the caller's closure; a panic stops the scan (non-zero) instead of
/// unwinding through C.
unsafe extern "C" fn on_match(
    id: c_uint,
    _from: u64,
    to: u64,
    _flags: c_uint,
    context: *mut c_void,
) -> c_int {
    // SAFETY: `Database::scan` passes a pointer to its live `Context`, which nothing else
    // touches during the scan.
    let context = unsafe { &mut *context.cast::<Context<'_>>() };
    // Ids are literal indexes and ends lie within the window: both fit in usize.
    #[allow(clippy::cast_possible_truncation)]
    let (id, end) = (id as usize, to as usize);
    match catch_unwind(AssertUnwindSafe(|| (context.on)(id, end))) {
        Ok(()) => 0,
        Err(payload) => {
            context.panic = Some(payload);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every occurrence the slow way: each literal at each position.
    fn naive(literals: &[&[u8]], text: &[u8], caseless: bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, l) in literals.iter().enumerate() {
            for s in 0..text.len() {
                let Some(window) = text.get(s..s + l.len()) else {
                    break;
                };
                let hit = if caseless {
                    window.eq_ignore_ascii_case(l)
                } else {
                    window == *l
                };
                if hit {
                    out.push((i, s));
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn found(set: &Literals, text: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        set.for_each(text, |i, s| out.push((i, s)));
        out.sort_unstable();
        out
    }

    #[test]
    fn finds_overlapping_and_caseless_occurrences() {
        let lits: [&[u8]; 4] = [b"aa", b"aaa", b"Sk-", b"@"];
        let set = Literals::new(&lits, true).unwrap();
        let text = b"aaaa sK-x @ AA";
        assert_eq!(found(&set, text), naive(&lits, text, true));
        assert!(found(&set, text).contains(&(0, 2)), "overlapping aa");
        let exact = Literals::new(&lits, false).unwrap();
        assert_eq!(found(&exact, text), naive(&lits, text, false));
        assert!(!found(&exact, text).iter().any(|&(i, _)| i == 2));
    }

    #[test]
    fn an_empty_set_finds_nothing_and_an_empty_literal_is_refused() {
        let set = Literals::new(&[], true).unwrap();
        assert!(found(&set, b"anything").is_empty());
        assert!(matches!(
            Literals::new(&[b""], true),
            Err(Error::Compile(_))
        ));
    }

    #[test]
    fn windows_report_each_occurrence_once_across_their_seams() {
        let lits: [&[u8]; 3] = [b"abcab", b"ca", b"b"];
        let text = b"abcabcabcabcab cab";
        let want = naive(&lits, text, false);
        let set = Literals::new(&lits, false).unwrap();
        for max in 5..=text.len() + 1 {
            let mut got = Vec::new();
            set.for_each_windowed(text, max, |i, s| got.push((i, s)));
            got.sort_unstable();
            assert_eq!(got, want, "windows of {max}");
        }
        // Each window is at most `max` bytes and every byte is in one.
        let mut covered = vec![false; text.len()];
        scan_windows(text, 7, 5, |window, base, _| {
            assert!(window.len() <= 7);
            covered[base..base + window.len()].fill(true);
        });
        assert!(covered.iter().all(|&c| c));
    }

    #[test]
    fn a_panic_in_the_callback_reaches_the_caller_and_the_set_still_scans() {
        let set = Literals::new(&[b"x"], false).unwrap();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            set.for_each(b"x", |_, _| panic!("from the callback"));
        }));
        assert!(r.is_err());
        assert_eq!(found(&set, b"xx"), [(0, 0), (0, 1)]);
    }

    #[test]
    fn threads_scan_one_set_at_once() {
        let lits: [&[u8]; 2] = [b"key", b"password"];
        let set = Literals::new(&lits, true).unwrap();
        let text = b"my PASSWORD and key, keykey".repeat(50);
        let want = naive(&lits, &text, true);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        assert_eq!(found(&set, &text), want);
                    }
                });
            }
        });
    }

    proptest::proptest! {
        #[test]
        fn finds_what_the_naive_search_finds(
            lits in proptest::collection::vec("[abAB@-]{1,5}", 1..8),
            text in "[abAB@ -]{0,64}",
            caseless: bool,
        ) {
            let lits: Vec<&[u8]> = lits.iter().map(String::as_bytes).collect();
            let set = Literals::new(&lits, caseless).unwrap();
            proptest::prop_assert_eq!(
                found(&set, text.as_bytes()),
                naive(&lits, text.as_bytes(), caseless)
            );
        }
    }
}
