//! Turns frame keys into function names, source files and lines.
//!
//! One backend per kind of frame: object files (`elf` symbol tables and
//! `dwarf` line/inline info, with separate debug files found by
//! `debuginfo`), the kernel (`kernel`, kallsyms), and JIT code (`perfmap`).
//! Each object is parsed once, the first time one of its addresses is
//! symbolized, and its results are cached per address; both caches are
//! bounded.

pub mod debuginfo;
pub mod demangle;
pub mod dwarf;
pub mod elf;
pub mod kernel;
pub mod perfmap;

use hashbrown::{HashMap, HashSet};
use std::{
    path::PathBuf,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use self::{
    debuginfo::DebugRefs,
    dwarf::DwarfInfo,
    elf::ElfSymbols,
    kernel::{KernelSymbols, NameReader, kernel_build_id},
    perfmap::PerfMap,
};
use crate::{
    golang::{buildinfo, pclntab::GoTable},
    process::{
        ObjectFile, ObjectId, ProcId, ProcessMeta,
        objects::{self, Bytes},
    },
};

/// One function frame of a location (a location has one per inlined call).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymFrame {
    /// Human-readable (demangled) name; empty when unknown.
    pub name: Arc<str>,
    /// Name as in the binary (mangled); equals `name` when not mangled.
    pub system_name: Arc<str>,
    /// Source file; empty when unknown.
    pub file: Arc<str>,
    /// Source line; 0 when unknown.
    pub line: u32,
    /// Line the function starts on; 0 when unknown.
    pub start_line: u32,
}

/// What is known about an object's debug information.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// DWARF was found (in the file or a separate debug file) and, except
    /// for Go binaries, parsed: theirs is parsed on first need, and Go's
    /// own table gives their Go code lines and inline frames meanwhile.
    pub has_dwarf: bool,
    /// The separate debug file used, if any.
    pub debug_file: Option<PathBuf>,
    /// A Go binary, symbolized from its `.gopclntab`.
    pub is_go: bool,
    /// Its Go build id.
    pub go_build_id: Option<String>,
}

/// An object's DWARF, parsed when the object is or on first need.
enum Dwarf {
    /// None found, or unusable.
    Absent,
    /// Found, not parsed yet.
    Deferred(DwarfSource),
    Loaded(Box<DwarfInfo>),
}

/// Where an object's DWARF is: the file holding it and its dwz file.
struct DwarfSource {
    /// The object's path, for messages.
    path: String,
    owner: Arc<Bytes>,
    sup: Option<Arc<Bytes>>,
}

impl DwarfSource {
    fn load(&self) -> Dwarf {
        fn parse(b: &Arc<Bytes>) -> Result<object::File<'_>, String> {
            object::File::parse(&***b).map_err(|e| e.to_string())
        }
        let loaded = parse(&self.owner).and_then(|file| {
            let sup_file = self.sup.as_ref().map(parse).transpose()?;
            let sup = sup_file.as_ref().zip(self.sup.as_ref());
            DwarfInfo::load(&file, &self.owner, sup).map_err(|e| e.to_string())
        });
        match loaded {
            Ok(d) => Dwarf::Loaded(Box::new(d)),
            Err(e) => {
                debug!("{}: unusable DWARF: {e}", self.path);
                Dwarf::Absent
            }
        }
    }
}

/// Strings shared by many frames (function and file names).
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(Arc::clone(&a));
        a
    }
}

/// Most cached addresses per object before its cache is cleared.
pub const MAX_CACHED_ADDRESSES: usize = 1 << 16;
/// Most parsed objects kept.
const MAX_OBJECTS: usize = 512;
/// Kernel symbols are re-read this often (modules come and go).
const KALLSYMS_TTL: Duration = Duration::from_secs(600);
/// A missing JIT symbol re-reads the perf map at most this often.
const PERF_MAP_RECHECK: Duration = Duration::from_secs(1);

/// Parsed symbol sources of one object and its address cache.
pub struct ObjectSymbols {
    elf: ElfSymbols,
    dwarf: Dwarf,
    /// Go's own function table: names, lines and inline frames even when
    /// stripped; preferred over DWARF for Go code.
    go: Option<GoTable>,
    cache: HashMap<u64, Arc<[SymFrame]>>,
    info: ObjectInfo,
    /// The files read (object, debug file, dwz file), to drop their pages
    /// from RSS between windows.
    files: Vec<Arc<Bytes>>,
}

impl ObjectSymbols {
    /// Parses `obj`'s symbol table and DWARF (finding a separate debug file;
    /// a Go binary's DWARF waits until its own table misses an address).
    pub fn load(obj: &ObjectFile) -> Self {
        let empty = Self {
            elf: ElfSymbols::default(),
            dwarf: Dwarf::Absent,
            go: None,
            cache: HashMap::new(),
            info: ObjectInfo::default(),
            files: vec![Arc::clone(&obj.bytes)],
        };
        let Ok(main) = object::File::parse(&**obj.bytes) else {
            return empty;
        };
        // The daemon samples itself like any process, but names its own
        // frames from the symbol table only: its DWARF (tens of MiB, parsed
        // a unit at a time as addresses arrive) would cost more memory than
        // every other object of a typical node together.
        let own = obj.key.is_some() && obj.key == objects::own_executable();
        let refs = DebugRefs::of(&main);
        let debug = if own || dwarf::has_debug_info(&main) {
            None
        } else {
            debuginfo::find(&obj.root, &obj.path, &refs)
        };
        let debug_file = debug
            .as_ref()
            .and_then(|(_, bytes)| object::File::parse(&***bytes).ok());

        let mut files = vec![&main];
        files.extend(debug_file.as_ref());
        let elf = ElfSymbols::collect(&files);

        let (dw_file, dw_owner, dw_path) = match (&debug_file, &debug) {
            (Some(f), Some((path, bytes))) if dwarf::has_debug_info(f) => {
                (Some(f), Some(bytes), Some(path.clone()))
            }
            _ if !own && dwarf::has_debug_info(&main) => (Some(&main), Some(&obj.bytes), None),
            _ => (None, None, None),
        };
        let go = match GoTable::parse(Arc::clone(&obj.bytes)) {
            Ok(table) => table,
            Err(e) => {
                debug!("{}: unusable .gopclntab: {e}", obj.path);
                None
            }
        };
        let mut info = ObjectInfo {
            has_dwarf: false,
            debug_file: debug.as_ref().map(|(p, _)| p.clone()),
            is_go: go.is_some(),
            go_build_id: go
                .is_some()
                .then(|| {
                    buildinfo::read(&main)
                        .ok()
                        .flatten()
                        .and_then(|b| b.build_id)
                })
                .flatten(),
        };
        let mut files = vec![Arc::clone(&obj.bytes)];
        files.extend(debug.as_ref().map(|(_, b)| Arc::clone(b)));
        let source = match (dw_file, dw_owner) {
            (Some(file), Some(owner)) => {
                let sup = debuginfo::find_alt(
                    &obj.root,
                    dw_path
                        .as_deref()
                        .unwrap_or(std::path::Path::new(&obj.path)),
                    file,
                );
                files.extend(sup.clone());
                Some(DwarfSource {
                    path: obj.path.clone(),
                    owner: Arc::clone(owner),
                    sup,
                })
            }
            _ => None,
        };
        let dwarf = match source {
            // Go's own table names Go code (with inlining and lines); DWARF
            // is read only for code it does not cover (cgo, C libraries
            // linked in), which most Go programs never run.
            Some(source) if go.is_some() => {
                info.has_dwarf = true;
                Dwarf::Deferred(source)
            }
            Some(source) => {
                let dwarf = source.load();
                info.has_dwarf = matches!(dwarf, Dwarf::Loaded(_));
                dwarf
            }
            None => Dwarf::Absent,
        };
        let syms = Self {
            elf,
            dwarf,
            go,
            cache: HashMap::new(),
            info,
            files,
        };
        // Parsing read symbol tables and inflated compressed sections: those
        // pages are not needed again, and the first window loads many
        // objects at once, so they leave RSS now rather than at its end.
        syms.release_pages();
        syms
    }

    /// Drops the pages of the files it reads from RSS (they fault back in
    /// from the page cache when read again).
    fn release_pages(&self) {
        for f in &self.files {
            f.release_pages();
        }
    }

    fn lookup(&mut self, addr: u64, strings: &mut Interner) -> Arc<[SymFrame]> {
        if let Some(hit) = self.cache.get(&addr) {
            return Arc::clone(hit);
        }
        let mut frames: Vec<SymFrame> = Vec::new();
        if let Some(go) = &self.go {
            for f in go.frames(addr) {
                let name = strings.get(&f.function);
                frames.push(SymFrame {
                    system_name: Arc::clone(&name),
                    name,
                    file: strings.get(&f.file),
                    line: f.line,
                    start_line: f.start_line,
                });
            }
        }
        if let (true, Dwarf::Deferred(source)) = (frames.is_empty(), &self.dwarf) {
            self.dwarf = source.load();
        }
        if let (true, Dwarf::Loaded(d)) = (frames.is_empty(), &self.dwarf) {
            for f in d.frames(addr) {
                let (name, system_name) = names(f.name.as_deref().unwrap_or(""), strings);
                frames.push(SymFrame {
                    name,
                    system_name,
                    file: strings.get(f.file.as_deref().unwrap_or("")),
                    line: f.line,
                    start_line: f.decl_line,
                });
            }
        }
        let symbol = self.elf.lookup(addr);
        match (frames.last_mut(), symbol) {
            // No DWARF for this address: the symbol table names it.
            (None, Some(sym)) => {
                let (name, system_name) = names(sym.name, strings);
                frames.push(SymFrame {
                    name,
                    system_name,
                    file: strings.get(""),
                    line: 0,
                    start_line: 0,
                });
            }
            // DWARF knows the line but not the function.
            (Some(outer), Some(sym)) if outer.name.is_empty() => {
                let (name, system_name) = names(sym.name, strings);
                outer.name = name;
                outer.system_name = system_name;
            }
            _ => {}
        }
        let frames: Arc<[SymFrame]> = frames.into();
        bounded_insert(&mut self.cache, addr, &frames);
        frames
    }
}

/// Caches `frames` under `key` in a cache of at most
/// [`MAX_CACHED_ADDRESSES`] entries, emptied when full: what is hot comes
/// back within a window, and no per-entry bookkeeping is kept.
fn bounded_insert<K: Eq + std::hash::Hash>(
    cache: &mut HashMap<K, Arc<[SymFrame]>>,
    key: K,
    frames: &Arc<[SymFrame]>,
) {
    if cache.len() >= MAX_CACHED_ADDRESSES {
        cache.clear();
    }
    cache.insert(key, Arc::clone(frames));
}

fn names(raw: &str, strings: &mut Interner) -> (Arc<str>, Arc<str>) {
    let system = strings.get(raw);
    let name = match demangle::demangle(raw) {
        Some(d) => strings.get(&d),
        None => Arc::clone(&system),
    };
    (name, system)
}

struct ObjectEntry {
    object: Weak<ObjectFile>,
    syms: ObjectSymbols,
    last_used: u64,
}

struct PerfMapEntry {
    map: PerfMap,
    fingerprint: Option<(u64, i64)>,
    checked: Instant,
}

/// Kernel symbol state.
#[derive(Default)]
struct KernelState {
    syms: Option<KernelSymbols>,
    /// Frames by symbol index (names are stored deflated), for `syms`.
    frames: HashMap<u32, Arc<[SymFrame]>>,
    /// Frames by address, for `syms`: a window's kernel locations are
    /// mostly last window's, and a hit here skips the binary search of
    /// ~120,000 symbols (those searches were 6% of the daemon's steady CPU
    /// under perf at 999 Hz on `go`, BENCHMARKS.md "What profiling the
    /// profiler showed"; criterion `encode/profile_build`, whose window has
    /// few kernel locations, gained 2%: 3.82 → 3.74 ms).
    by_addr: HashMap<u64, Arc<[SymFrame]>>,
    names: NameReader,
    loaded: Option<Instant>,
    build_id: Option<Option<Vec<u8>>>,
    warned: bool,
}

/// The parsed symbols of `obj`, parsing it on first use.
fn object_entry<'a>(
    objects: &'a mut HashMap<ObjectId, ObjectEntry>,
    tick: u64,
    obj: &Arc<ObjectFile>,
) -> &'a mut ObjectEntry {
    let e = objects.entry(obj.id).or_insert_with(|| {
        let started = Instant::now();
        let syms = ObjectSymbols::load(obj);
        debug!(
            "parsed {} in {:?}: {} symbols, dwarf: {}, debug file: {:?}",
            obj.path,
            started.elapsed(),
            syms.elf.len(),
            syms.info.has_dwarf,
            syms.info.debug_file
        );
        ObjectEntry {
            object: Arc::downgrade(obj),
            syms,
            last_used: tick,
        }
    });
    e.last_used = tick;
    e
}

/// Symbolizes frames of every kind, with caches that outlive windows.
#[derive(Default)]
pub struct Symbolizer {
    objects: HashMap<ObjectId, ObjectEntry>,
    kernel: KernelState,
    perf_maps: HashMap<ProcId, PerfMapEntry>,
    strings: Interner,
    tick: u64,
}

impl Symbolizer {
    /// A symbolizer with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames at link-time address `addr` of `obj`, innermost first.
    pub fn object_frames(&mut self, obj: &Arc<ObjectFile>, addr: u64) -> Arc<[SymFrame]> {
        object_entry(&mut self.objects, self.tick, obj)
            .syms
            .lookup(addr, &mut self.strings)
    }

    /// Drops the pages of `obj`'s files from RSS, if it was parsed.
    pub fn release_pages(&self, obj: &ObjectFile) {
        if let Some(e) = self.objects.get(&obj.id) {
            e.syms.release_pages();
        }
    }

    /// Debug-information facts of `obj` (parses it if needed).
    pub fn object_info(&mut self, obj: &Arc<ObjectFile>) -> ObjectInfo {
        object_entry(&mut self.objects, self.tick, obj)
            .syms
            .info
            .clone()
    }

    /// Reads kernel symbols when there are none yet or they are stale.
    fn refresh_kernel_symbols(&mut self) {
        let stale = self
            .kernel
            .loaded
            .is_none_or(|t| t.elapsed() >= KALLSYMS_TTL);
        if !stale {
            return;
        }
        self.kernel.loaded = Some(Instant::now());
        match KernelSymbols::load() {
            Ok(k) => {
                self.kernel.syms = Some(k);
                self.kernel.frames.clear();
                self.kernel.by_addr.clear();
            }
            Err(e) if !self.kernel.warned => {
                self.kernel.warned = true;
                warn!("kernel frames stay unsymbolized: {e}");
            }
            Err(_) => {}
        }
    }

    /// Frames of kernel address `addr`.
    pub fn kernel_frames(&mut self, addr: u64) -> Arc<[SymFrame]> {
        self.refresh_kernel_symbols();
        if let Some(frames) = self.kernel.by_addr.get(&addr) {
            return Arc::clone(frames);
        }
        let frames = self.kernel_frames_uncached(addr);
        bounded_insert(&mut self.kernel.by_addr, addr, &frames);
        frames
    }

    /// [`Self::kernel_frames`] by symbol search.
    fn kernel_frames_uncached(&mut self, addr: u64) -> Arc<[SymFrame]> {
        let found = self
            .kernel
            .syms
            .as_ref()
            .and_then(|k| Some((k, k.lookup(addr)?)));
        let Some((k, hit)) = found else {
            return Arc::from([]);
        };
        if let Some(frames) = self.kernel.frames.get(&hit.index) {
            return Arc::clone(frames);
        }
        let (index, name) = (hit.index, k.name(hit.index, &mut self.kernel.names));
        let module = hit.module.map(|m| format!("[{m}]"));
        let frames = self.named_frame(&name, module.as_deref().unwrap_or(""));
        bounded_insert(&mut self.kernel.frames, index, &frames);
        frames
    }

    /// A location with one frame known only by name (and a file label).
    fn named_frame(&mut self, name: &str, file: &str) -> Arc<[SymFrame]> {
        let name = self.strings.get(name);
        let file = self.strings.get(file);
        Arc::from([SymFrame {
            system_name: Arc::clone(&name),
            name,
            file,
            line: 0,
            start_line: 0,
        }])
    }

    /// The kernel's text range from kallsyms and its build id.
    pub fn kernel_mapping(&mut self) -> ((u64, u64), Option<Vec<u8>>) {
        self.refresh_kernel_symbols();
        let range = self
            .kernel
            .syms
            .as_ref()
            .map_or((0, 0), KernelSymbols::range);
        let build_id = self
            .kernel
            .build_id
            .get_or_insert_with(kernel_build_id)
            .clone();
        (range, build_id)
    }

    /// Frames of JIT address `addr` in `process`, from its perf map.
    pub fn jit_frames(&mut self, process: &ProcessMeta, addr: u64) -> Arc<[SymFrame]> {
        let paths = [
            PathBuf::from(format!(
                "/proc/{}/root/tmp/perf-{}.map",
                process.pid, process.ns_pid
            )),
            PathBuf::from(format!("/tmp/perf-{}.map", process.pid)),
        ];
        let fingerprint = || {
            paths.iter().find_map(|p| {
                let m = std::fs::metadata(p).ok()?;
                use std::os::unix::fs::MetadataExt;
                Some((
                    p.clone(),
                    (m.size(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
                ))
            })
        };
        let load = |path: &PathBuf| {
            std::fs::File::open(path)
                .map(|f| PerfMap::parse(std::io::BufReader::new(f)))
                .unwrap_or_default()
        };
        let entry = self.perf_maps.entry(process.id).or_insert_with(|| {
            let found = fingerprint();
            PerfMapEntry {
                map: found.as_ref().map(|(p, _)| load(p)).unwrap_or_default(),
                fingerprint: found.map(|(_, f)| f),
                checked: Instant::now(),
            }
        });
        if entry.map.lookup(addr).is_none() && entry.checked.elapsed() >= PERF_MAP_RECHECK {
            entry.checked = Instant::now();
            if let Some((path, fp)) = fingerprint()
                && entry.fingerprint != Some(fp)
            {
                entry.map = load(&path);
                entry.fingerprint = Some(fp);
            }
        }
        let Some(name) = entry.map.lookup(addr).map(str::to_owned) else {
            return Arc::from([]);
        };
        self.named_frame(&name, "")
    }

    /// Ends a window: drops parsed objects that are gone or least recently
    /// used beyond the bound, and perf maps of processes not seen.
    pub fn end_window(&mut self, live_processes: &HashSet<ProcId>) {
        self.tick += 1;
        self.objects.retain(|_, e| e.object.strong_count() > 0);
        if self.objects.len() > MAX_OBJECTS {
            let mut ages: Vec<_> = self.objects.values().map(|e| e.last_used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() - MAX_OBJECTS];
            self.objects.retain(|_, e| e.last_used >= cutoff);
        }
        for e in self.objects.values() {
            e.syms.release_pages();
        }
        self.perf_maps.retain(|id, _| live_processes.contains(id));
        // Drop interned strings no cache refers to any more.
        self.strings.0.retain(|s| Arc::strong_count(s) > 1);
    }

    /// Number of parsed objects held.
    pub fn objects_parsed(&self) -> usize {
        self.objects.len()
    }
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSymbol};

    use super::*;
    use crate::{
        process::objects::{Bytes, ObjectKind},
        testutil,
    };

    #[test]
    fn kernel_frames_name_this_kernels_functions_from_either_cache() {
        let Ok(k) = KernelSymbols::load() else {
            // Hidden addresses (not root): no frames, however often asked.
            let mut sym = Symbolizer::new();
            assert!(sym.kernel_frames(0xffff_ffff_8100_0000).is_empty());
            assert!(sym.kernel_frames(0xffff_ffff_8100_0000).is_empty());
            return;
        };
        let mut reader = NameReader::default();
        let mut sym = Symbolizer::new();
        // Addresses spread over the core kernel's text (modules and BPF
        // programs come and go while tests run), each asked twice: the
        // second answer is the first one, from the address cache. The next
        // byte, in the same function, is a new address but the same
        // symbol: its answer comes from the symbol cache. The core kernel's
        // text is its lowest 32 MiB or so.
        let (lo, hi) = k.range();
        let hi = hi.min(lo + (64 << 20));
        let step = ((hi - lo) / 997).max(1) as usize;
        let mut checked = 0;
        for a in (lo..hi).step_by(step) {
            let Some(hit) = k.lookup(a).filter(|h| h.module.is_none()) else {
                continue;
            };
            let first = sym.kernel_frames(a);
            assert_eq!(first.len(), 1, "{a:x}");
            assert_eq!(
                &*first[0].system_name,
                k.name(hit.index, &mut reader),
                "{a:x}"
            );
            assert!(Arc::ptr_eq(&sym.kernel_frames(a), &first), "{a:x}");
            if k.lookup(a + 1).map(|h| h.index) == Some(hit.index) {
                assert!(Arc::ptr_eq(&sym.kernel_frames(a + 1), &first), "{a:x}");
            }
            checked += 1;
        }
        assert!(checked > 100, "{checked} addresses checked");
    }

    fn object_of(path: &std::path::Path) -> Arc<ObjectFile> {
        let mut obj = ObjectFile::from_bytes(
            ObjectId(1),
            path.to_string_lossy().into_owned(),
            ObjectKind::Elf,
            Bytes::Owned(std::fs::read(path).unwrap()),
        );
        obj.root = PathBuf::from("/nonexistent-root");
        Arc::new(obj)
    }

    fn address_of(path: &std::path::Path, name: &str) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .unwrap()
    }

    #[test]
    fn stripped_binary_is_symbolized_through_its_debug_file() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, debug) = testutil::stripped_pair(dir.path());
        // Stripped: the address comes from the debug file's symbol table.
        let addr = address_of(&debug, "answer");
        let obj = object_of(&bin);
        let mut sym = Symbolizer::new();
        let frames = sym.object_frames(&obj, addr);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(&*frames[0].name, "answer");
        assert!(frames[0].file.ends_with("d.c"), "{frames:?}");
        assert_eq!(frames[0].line, 2);
        assert_eq!(frames[0].start_line, 2);
        let info = sym.object_info(&obj);
        assert!(info.has_dwarf);
        assert_eq!(info.debug_file.as_deref(), Some(debug.as_path()));
        // Cached: the same frames object comes back.
        assert!(Arc::ptr_eq(&frames, &sym.object_frames(&obj, addr)));
    }

    #[test]
    fn inlined_calls_are_frames_of_their_own() {
        let src = "static inline __attribute__((always_inline)) unsigned long twice(unsigned long x) {\n\
                   \x20   for (int i = 0; i < 16; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }\n\
                   \x20   return x;\n}\n\
                   __attribute__((noinline)) unsigned long outer(unsigned long n) {\n\
                   \x20   unsigned long s = n;\n    for (unsigned long i = 0; i < n; i++) s = twice(s + i);\n    return s;\n}\n\
                   int main(int c, char **v) { (void)v; return (int)outer(c * 1000); }\n";
        let dir = tempfile::tempdir().unwrap();
        let bin = testutil::compile_c(dir.path(), "inl", src, &["-O2", "-g"]);
        let bytes = std::fs::read(&bin).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let outer = file.symbols().find(|s| s.name() == Ok("outer")).unwrap();
        let obj = object_of(&bin);
        let mut sym = Symbolizer::new();
        let inlined = (outer.address()..outer.address() + outer.size())
            .map(|a| sym.object_frames(&obj, a))
            .find(|f| f.len() == 2)
            .expect("an address inside the inlined call");
        assert_eq!((&*inlined[0].name, &*inlined[1].name), ("twice", "outer"));
        assert_eq!(inlined[0].line, 2, "line inside twice");
        assert_eq!(inlined[1].line, 7, "call site in outer");
        assert_eq!((inlined[0].start_line, inlined[1].start_line), (1, 5));
        assert!(inlined.iter().all(|f| f.file.ends_with("inl.c")));
    }

    #[test]
    fn without_debug_info_the_symbol_table_names_functions() {
        let dir = tempfile::tempdir().unwrap();
        let bin = testutil::compile_c(dir.path(), "n", testutil::ANSWER_C, &["-O1"]);
        let addr = address_of(&bin, "answer");
        let obj = object_of(&bin);
        let mut sym = Symbolizer::new();
        let frames = sym.object_frames(&obj, addr + 1);
        assert_eq!(&*frames[0].name, "answer");
        assert!(frames[0].file.is_empty() && frames[0].line == 0);
        assert!(!sym.object_info(&obj).has_dwarf);
        // An address in no function has no frames.
        assert!(sym.object_frames(&obj, 0x10).is_empty());
    }

    #[test]
    fn go_binaries_read_dwarf_only_for_code_their_table_misses() {
        let Some((_, go)) = testutil::go_toolchains().pop() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = "package main\n\nfunc main() { println(\"hi\") }\n";
        let bin = testutil::build_go(&go, dir.path(), "hello", src, &[]);
        let obj = object_of(&bin);
        let mut syms = ObjectSymbols::load(&obj);
        assert!(syms.info.is_go && syms.info.has_dwarf);
        assert!(matches!(syms.dwarf, Dwarf::Deferred(_)));
        let mut strings = Interner::default();
        let frames = syms.lookup(address_of(&bin, "main.main") + 1, &mut strings);
        assert_eq!(&*frames.last().unwrap().name, "main.main");
        assert!(matches!(syms.dwarf, Dwarf::Deferred(_)));
        // An address Go's table does not cover: DWARF is read now.
        assert!(syms.lookup(1, &mut strings).is_empty());
        assert!(matches!(syms.dwarf, Dwarf::Loaded(_)));
    }

    #[test]
    fn evicts_objects_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let bin = testutil::compile_c(dir.path(), "e", testutil::ANSWER_C, &["-O1"]);
        let obj = object_of(&bin);
        let mut sym = Symbolizer::new();
        sym.object_frames(&obj, address_of(&bin, "answer"));
        assert_eq!(sym.objects_parsed(), 1);
        sym.end_window(&HashSet::new());
        assert_eq!(sym.objects_parsed(), 1);
        drop(obj);
        sym.end_window(&HashSet::new());
        assert_eq!(sym.objects_parsed(), 0);
    }
}
