//! Kernel symbols from `/proc/kallsyms` (with module names) and the kernel's
//! GNU build id from `/sys/kernel/notes`. Parsing takes any reader so tests
//! use snippets.

use std::io::{self, BufRead};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// A symbol: the low 32 bits of its address (the high ones are in
/// `KernelSymbols::high`) and where its name is.
#[derive(Clone, Copy, Debug)]
struct KSym {
    low: u32,
    /// Block index << [`BLOCK_BITS`] | offset of the name in the inflated block.
    name: u32,
}

/// Sorted kernel text symbols, 8 bytes each plus their deflated names.
///
/// Kept for the daemon's life, and re-read every ten minutes: with 120,000
/// symbols, 16-byte entries (`u64` address, name position and length,
/// module) and plain names in 64 KiB chunks took 4.8 MiB, the largest heap
/// item of a 19 Hz daemon. Here it is about 2 MiB. A name is inflated (its
/// 4 KiB block, ~11 µs) only when a sample first lands in its function; the
/// symbolizer caches it from then on.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    syms: Vec<KSym>,
    /// (first symbol index, high 32 bits of the address) for each run of
    /// symbols sharing them: kernel text spans far less than 4 GiB, so
    /// there are one or two runs.
    high: Vec<(u32, u32)>,
    /// (first symbol index, module index + 1, 0 for the core kernel) for each
    /// run of symbols of one module: a module's text is one allocation.
    module_runs: Vec<(u32, u16)>,
    modules: Vec<String>,
    /// NUL-terminated names in blocks of at most `1 << BLOCK_BITS` bytes, each
    /// deflated on its own.
    blocks: Vec<Box<[u8]>>,
}

/// Size of a name block before compression, as a power of two.
const BLOCK_BITS: u32 = 12;
const BLOCK_SIZE: usize = 1 << BLOCK_BITS;

/// Inflates name blocks for [`KernelSymbols::name`]: one inflater, reset
/// between names, and its output buffer. With a new inflater and buffer
/// per name a name took 12.8 µs, reused 11.0 µs (criterion
/// `symbolize/kernel_names`). Inflating only up to the name's end gained
/// nothing measurable (11.15 µs): the cost is the block's setup, not its
/// length. It is the price of keeping this kernel's 2.9 MiB of names in
/// 0.7 MiB.
#[derive(Debug)]
pub struct NameReader {
    z: Decompress,
    out: Box<[u8; BLOCK_SIZE]>,
}

impl Default for NameReader {
    fn default() -> Self {
        Self {
            z: Decompress::new(false),
            out: Box::new([0; BLOCK_SIZE]),
        }
    }
}

/// A kernel symbol covering an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHit<'a> {
    /// The symbol's index, for [`KernelSymbols::name`].
    pub index: u32,
    /// The module, for module code.
    pub module: Option<&'a str>,
    pub start: u64,
}

/// Why kernel symbols are unavailable.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read /proc/kallsyms: {0}")]
    Io(#[from] io::Error),
    #[error("/proc/kallsyms shows no addresses (kernel.kptr_restrict hides them)")]
    Hidden,
}

/// Largest distance from a symbol's start still attributed to it when the
/// next symbol is far away (the end of a module's text).
const MAX_SYMBOL_SPAN: u64 = 1 << 20;

/// Names of symbols being parsed, deflated a block at a time.
///
/// One compressor, reset between blocks, at the fastest level: a new
/// encoder per block at the default level made this packing 60% of the
/// whole load (perf, 999 Hz `go` bench), for names 13% smaller.
struct BlockWriter {
    blocks: Vec<Box<[u8]>>,
    current: Vec<u8>,
    z: Compress,
    out: Vec<u8>,
}

impl Default for BlockWriter {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            current: Vec::with_capacity(BLOCK_SIZE),
            z: Compress::new(Compression::fast(), false),
            out: Vec::with_capacity(2 * BLOCK_SIZE),
        }
    }
}

impl BlockWriter {
    /// Adds a name; returns where it is.
    fn push(&mut self, name: &str) -> io::Result<u32> {
        if self.current.len() + name.len() + 1 > BLOCK_SIZE {
            self.flush()?;
        }
        let at = (self.blocks.len() as u32) << BLOCK_BITS | self.current.len() as u32;
        self.current.extend_from_slice(name.as_bytes());
        self.current.push(0);
        Ok(at)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        self.z.reset();
        self.out.clear();
        // Deflate never grows 4 KiB by more than a few bytes, so one call
        // with twice the room finishes the stream.
        let status = self
            .z
            .compress_vec(&self.current, &mut self.out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status != flate2::Status::StreamEnd {
            return Err(io::Error::other("kallsyms name block did not deflate"));
        }
        self.blocks.push(self.out.as_slice().into());
        self.current.clear();
        Ok(())
    }
}

impl KernelSymbols {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Self, KallsymsError> {
        let file = std::fs::File::open("/proc/kallsyms")?;
        Self::parse(io::BufReader::with_capacity(1 << 16, file))
    }

    /// Parses kallsyms text: `ADDR TYPE NAME [\t[MODULE]]` per line.
    pub fn parse(mut reader: impl BufRead) -> Result<Self, KallsymsError> {
        let mut modules = Vec::new();
        let mut module_index = std::collections::HashMap::<String, u16>::new();
        // (address, name, module) until sorted.
        let mut raw: Vec<(u64, u32, u16)> = Vec::new();
        let mut names = BlockWriter::default();
        let mut line = String::new();
        let mut any_nonzero = false;
        let mut lines = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            lines += 1;
            let mut parts = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            any_nonzero |= addr != 0;
            if !matches!(kind, "t" | "T" | "w" | "W") || addr == 0 {
                continue;
            }
            let module = match parts.next() {
                Some(m) => {
                    let m = m.trim_start_matches('[').trim_end_matches(']');
                    let next = module_index.len() as u16 + 1;
                    *module_index.entry(m.to_owned()).or_insert_with(|| {
                        modules.push(m.to_owned());
                        next
                    })
                }
                None => 0,
            };
            if names.blocks.len() >= 1 << (32 - BLOCK_BITS) {
                break;
            }
            let at = names.push(truncate(name, BLOCK_SIZE - 1))?;
            raw.push((addr, at, module));
        }
        if lines > 0 && !any_nonzero {
            return Err(KallsymsError::Hidden);
        }
        names.flush()?;
        // Of symbols at one address the first listed is kept (names are
        // numbered in listing order); an unstable sort needs no buffer as
        // large as the list.
        raw.sort_unstable_by_key(|&(addr, name, _)| (addr, name));
        raw.dedup_by_key(|s| s.0);

        let mut out = KernelSymbols {
            syms: Vec::with_capacity(raw.len()),
            modules,
            blocks: names.blocks,
            ..Default::default()
        };
        for (i, &(addr, name, module)) in raw.iter().enumerate() {
            let i = i as u32;
            let high = (addr >> 32) as u32;
            if out.high.last().is_none_or(|&(_, h)| h != high) {
                out.high.push((i, high));
            }
            if out.module_runs.last().is_none_or(|&(_, m)| m != module) {
                out.module_runs.push((i, module));
            }
            out.syms.push(KSym {
                low: addr as u32,
                name,
            });
        }
        out.blocks.shrink_to_fit();
        out.modules.shrink_to_fit();
        Ok(out)
    }

    /// Address of symbol `i`.
    fn addr(&self, i: usize) -> u64 {
        let run = self.high.partition_point(|&(first, _)| first as usize <= i) - 1;
        u64::from(self.high[run].1) << 32 | u64::from(self.syms[i].low)
    }

    /// Index of the last symbol at or below `addr`.
    fn floor(&self, addr: u64) -> Option<usize> {
        let high = (addr >> 32) as u32;
        let run = self
            .high
            .partition_point(|&(_, h)| h <= high)
            .checked_sub(1)?;
        let (first, run_high) = self.high[run];
        let end = self
            .high
            .get(run + 1)
            .map_or(self.syms.len(), |&(next, _)| next as usize);
        if run_high < high {
            return Some(end - 1);
        }
        let low = addr as u32;
        let within = self.syms[first as usize..end].partition_point(|s| s.low <= low);
        (first as usize + within).checked_sub(1)
    }

    /// The symbol covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<KernelHit<'_>> {
        let i = self.floor(addr)?;
        let start = self.addr(i);
        let limit = if i + 1 < self.syms.len() {
            self.addr(i + 1) - start
        } else {
            MAX_SYMBOL_SPAN
        };
        if addr - start >= limit.min(MAX_SYMBOL_SPAN) {
            return None;
        }
        let run = self
            .module_runs
            .partition_point(|&(first, _)| first as usize <= i)
            - 1;
        let module = self.module_runs[run].1;
        Some(KernelHit {
            index: i as u32,
            module: (module > 0).then(|| self.modules[module as usize - 1].as_str()),
            start,
        })
    }

    /// The name of symbol `index`, inflating its block with `reader`.
    pub fn name(&self, index: u32, reader: &mut NameReader) -> String {
        let Some(s) = self.syms.get(index as usize) else {
            return String::new();
        };
        let Some(block) = self.blocks.get((s.name >> BLOCK_BITS) as usize) else {
            return String::new();
        };
        let NameReader { z, out } = reader;
        z.reset(false);
        if z.decompress(block, &mut out[..], FlushDecompress::Finish)
            .is_err()
        {
            return String::new();
        }
        let len = (z.total_out() as usize).min(BLOCK_SIZE);
        let rest = out[..len]
            .get((s.name as usize) & (BLOCK_SIZE - 1)..)
            .unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }

    /// Lowest and highest symbol address.
    pub fn range(&self) -> (u64, u64) {
        match self.syms.len() {
            0 => (0, 0),
            n => (self.addr(0), self.addr(n - 1) + 1),
        }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The GNU build id in an ELF note blob such as `/sys/kernel/notes`.
pub fn build_id_from_notes(notes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align4 = |n: usize| (n + 3) & !3;
    let mut rest = notes;
    while rest.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(rest[i..i + 4].try_into().unwrap());
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > rest.len() {
            return None;
        }
        if kind == NT_GNU_BUILD_ID && rest[12..12 + namesz].starts_with(b"GNU") {
            return Some(rest[name_end..name_end + descsz].to_vec());
        }
        rest = &rest[desc_end..];
    }
    None
}

/// The running kernel's build id.
pub fn kernel_build_id() -> Option<Vec<u8>> {
    build_id_from_notes(&std::fs::read("/sys/kernel/notes").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNIPPET: &str = "\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff81001000 t do_one_initcall
ffffffff81002000 D some_data
ffffffff81003000 W weak_func
ffffffffc0a00000 t nft_do_chain\t[nf_tables]
ffffffffc0a00100 T nft_register_chain\t[nf_tables]
ffffffffc0b00000 t ext4_fill_super\t[ext4]
";

    #[test]
    fn parses_core_and_module_symbols() {
        let k = KernelSymbols::parse(SNIPPET.as_bytes()).unwrap();
        // _stext and startup_64 share an address: the first listed is kept.
        assert_eq!(k.len(), 6);
        let mut r = NameReader::default();
        let mut named = |addr| {
            let hit = k.lookup(addr).unwrap();
            (k.name(hit.index, &mut r), hit.module, hit.start)
        };
        assert_eq!(
            named(0xffffffff81000000),
            ("_stext".into(), None, 0xffffffff81000000)
        );
        assert_eq!(
            named(0xffffffff81001010),
            ("do_one_initcall".into(), None, 0xffffffff81001000)
        );
        assert_eq!(
            named(0xffffffffc0a00010),
            ("nft_do_chain".into(), Some("nf_tables"), 0xffffffffc0a00000)
        );
        assert_eq!(named(0xffffffffc0a00104).0, "nft_register_chain");
        assert_eq!(named(0xffffffffc0b00001).1, Some("ext4"));
        // Data symbols are skipped: 0x...2000 belongs to do_one_initcall's span.
        assert_eq!(named(0xffffffff81002010).0, "do_one_initcall");
        assert!(k.lookup(0x1000).is_none());
        assert_eq!(k.range(), (0xffffffff81000000, 0xffffffffc0b00001));
        assert!(k.lookup(0xffffffffc0b00000 + MAX_SYMBOL_SPAN).is_none());
    }

    #[test]
    fn names_spanning_many_blocks_stay_whole() {
        // 200 names of ~1 KiB fill 50 blocks; each must come back whole.
        let name = |i: usize| format!("f{i:04}_{}", "x".repeat(1000 + i % 7));
        let text: String = (0..200)
            .rev()
            .map(|i| {
                format!(
                    "{:016x} t {}\n",
                    0xffffffff81000000u64 + i as u64 * 16,
                    name(i)
                )
            })
            .collect();
        let k = KernelSymbols::parse(text.as_bytes()).unwrap();
        assert_eq!(k.len(), 200);
        assert!(k.blocks.len() >= 40, "{} blocks", k.blocks.len());
        // One reader, blocks visited out of order.
        let mut r = NameReader::default();
        for i in (0..200).map(|i| (i * 7) % 200) {
            let hit = k.lookup(0xffffffff81000000 + i as u64 * 16 + 3).unwrap();
            assert_eq!(k.name(hit.index, &mut r), name(i));
        }
    }

    #[test]
    fn addresses_keep_their_high_bits() {
        // Symbols on both sides of 4 GiB boundaries, listed out of order.
        let text = "\
0000000200000010 t far_b\tmodb
00000001fffffff0 t near_edge\tmoda
ffffffff81000000 T core
0000000100000000 t low_a\tmoda
";
        let k = KernelSymbols::parse(text.as_bytes()).unwrap();
        assert_eq!(k.len(), 4);
        assert_eq!(k.high.len(), 3, "{:?}", k.high);
        let mut r = NameReader::default();
        let mut at = |addr| {
            k.lookup(addr).map(|h| {
                (
                    k.name(h.index, &mut r),
                    h.module.map(str::to_owned),
                    h.start,
                )
            })
        };
        assert_eq!(
            at(0x1_0000_0004),
            Some(("low_a".into(), Some("moda".into()), 0x1_0000_0000))
        );
        // Past the boundary, before the next symbol: still near_edge.
        assert_eq!(at(0x2_0000_0004).unwrap().0, "near_edge");
        assert_eq!(at(0x2_0000_0010).unwrap().1.as_deref(), Some("modb"));
        // Between far_b and core, far beyond MAX_SYMBOL_SPAN: nobody's.
        assert_eq!(at(0x2_0000_0010 + MAX_SYMBOL_SPAN), None);
        assert_eq!(
            at(0xffffffff81000001),
            Some(("core".into(), None, 0xffffffff81000000))
        );
        assert_eq!(at(0xffff), None);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t foo\n";
        assert!(matches!(
            KernelSymbols::parse(hidden.as_bytes()),
            Err(KallsymsError::Hidden)
        ));
    }

    #[test]
    fn reads_build_id_notes() {
        let mut notes = Vec::new();
        // An unrelated note first.
        for w in [4u32, 4, 1] {
            notes.extend_from_slice(&w.to_ne_bytes());
        }
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(&[1, 2, 3, 4]);
        for w in [4u32, 3, 3] {
            notes.extend_from_slice(&w.to_ne_bytes());
        }
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0]);
        assert_eq!(build_id_from_notes(&notes), Some(vec![0xaa, 0xbb, 0xcc]));
        assert_eq!(build_id_from_notes(&notes[..10]), None);
    }

    #[test]
    fn loads_this_kernel() {
        if !std::path::Path::new("/proc/kallsyms").exists() {
            return;
        }
        assert!(matches!(
            KernelSymbols::load(),
            Ok(_) | Err(KallsymsError::Hidden)
        ));
        // One read for both sides: BPF programs come and go meanwhile.
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        match KernelSymbols::parse(text.as_bytes()) {
            Ok(k) => {
                assert!(k.len() > 1000);
                // Every 97th text symbol comes back by its own address (or
                // as another name listed at that address).
                let mut names = std::collections::HashMap::<u64, Vec<&str>>::new();
                for line in text.lines() {
                    let f: Vec<&str> = line.split_ascii_whitespace().collect();
                    if f.len() >= 3 && matches!(f[1], "t" | "T" | "w" | "W") {
                        let addr = u64::from_str_radix(f[0], 16).unwrap();
                        names.entry(addr).or_default().push(f[2]);
                    }
                }
                let mut checked = 0;
                let mut r = NameReader::default();
                for (&addr, listed) in names.iter().step_by(97) {
                    let hit = k.lookup(addr).expect("a listed address");
                    assert_eq!(hit.start, addr);
                    let name = k.name(hit.index, &mut r);
                    assert!(
                        listed.contains(&name.as_str()),
                        "{addr:x}: {name} not in {listed:?}"
                    );
                    checked += 1;
                }
                assert!(checked > 100, "{checked} checked");
            }
            // Unprivileged test runs see zeros.
            Err(KallsymsError::Hidden) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
