//! Kernel symbols from `/proc/kallsyms` (with module names) and the kernel's
//! GNU build id from `/sys/kernel/notes`. Parsing takes any reader so tests
//! use snippets.

use std::io::{self, BufRead};

#[derive(Clone, Copy, Debug)]
struct KSym {
    addr: u64,
    /// Chunk index << [`CHUNK_BITS`] | offset in the chunk.
    name_start: u32,
    name_len: u16,
    /// Index into `modules` + 1; 0 for the core kernel.
    module: u16,
}

/// Sorted kernel text symbols.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    syms: Vec<KSym>,
    /// Names in chunks of `1 << CHUNK_BITS` bytes, none split between two:
    /// one 3 MiB string grown by doubling held 6 MiB at once while parsing.
    names: Vec<String>,
    modules: Vec<String>,
}

/// Size of a name chunk, as a power of two.
const CHUNK_BITS: u32 = 16;

/// A kernel symbol covering an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelHit<'a> {
    pub name: &'a str,
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

impl KernelSymbols {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Self, KallsymsError> {
        let file = std::fs::File::open("/proc/kallsyms")?;
        Self::parse(io::BufReader::with_capacity(1 << 16, file))
    }

    /// Parses kallsyms text: `ADDR TYPE NAME [\t[MODULE]]` per line.
    pub fn parse(mut reader: impl BufRead) -> Result<Self, KallsymsError> {
        let mut out = KernelSymbols::default();
        let mut module_index = std::collections::HashMap::<String, u16>::new();
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
                        out.modules.push(m.to_owned());
                        next
                    })
                }
                None => 0,
            };
            let name = truncate(name, (1 << CHUNK_BITS) - 1);
            if out
                .names
                .last()
                .is_none_or(|c| c.len() + name.len() > 1 << CHUNK_BITS)
            {
                if out.names.len() >= 1 << (32 - CHUNK_BITS) {
                    break;
                }
                out.names.push(String::with_capacity(1 << CHUNK_BITS));
            }
            let index = (out.names.len() - 1) as u32;
            let chunk = out.names.last_mut().expect("a chunk was pushed");
            out.syms.push(KSym {
                addr,
                name_start: index << CHUNK_BITS | chunk.len() as u32,
                name_len: name.len() as u16,
                module,
            });
            chunk.push_str(name);
        }
        if lines > 0 && !any_nonzero {
            return Err(KallsymsError::Hidden);
        }
        // Of symbols at one address the first listed is kept; an unstable
        // sort (by name position too) needs no buffer as large as the list.
        out.syms.sort_unstable_by_key(|s| (s.addr, s.name_start));
        out.syms.dedup_by_key(|s| s.addr);
        out.syms.shrink_to_fit();
        if let Some(last) = out.names.last_mut() {
            last.shrink_to_fit();
        }
        Ok(out)
    }

    /// The symbol covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<KernelHit<'_>> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = self.syms[i];
        let limit = self
            .syms
            .get(i + 1)
            .map_or(MAX_SYMBOL_SPAN, |n| n.addr - s.addr);
        if addr - s.addr >= limit.min(MAX_SYMBOL_SPAN) {
            return None;
        }
        Some(KernelHit {
            name: {
                let chunk = &self.names[(s.name_start >> CHUNK_BITS) as usize];
                let start = (s.name_start & ((1 << CHUNK_BITS) - 1)) as usize;
                &chunk[start..start + s.name_len as usize]
            },
            module: (s.module > 0).then(|| self.modules[s.module as usize - 1].as_str()),
            start: s.addr,
        })
    }

    /// Lowest and highest symbol address.
    pub fn range(&self) -> (u64, u64) {
        (
            self.syms.first().map_or(0, |s| s.addr),
            self.syms.last().map_or(0, |s| s.addr + 1),
        )
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
        assert_eq!(k.lookup(0xffffffff81000000).unwrap().name, "_stext");
        let hit = k.lookup(0xffffffff81001010).unwrap();
        assert_eq!((hit.name, hit.module), ("do_one_initcall", None));
        let hit = k.lookup(0xffffffffc0a00010).unwrap();
        assert_eq!((hit.name, hit.module), ("nft_do_chain", Some("nf_tables")));
        assert_eq!(
            k.lookup(0xffffffffc0a00104).unwrap().name,
            "nft_register_chain"
        );
        assert_eq!(k.lookup(0xffffffffc0b00001).unwrap().module, Some("ext4"));
        // Data symbols are skipped: 0x...2000 belongs to do_one_initcall's span.
        assert_eq!(
            k.lookup(0xffffffff81002010).unwrap().name,
            "do_one_initcall"
        );
        assert!(k.lookup(0x1000).is_none());
        assert!(k.lookup(0xffffffffc0b00000 + MAX_SYMBOL_SPAN).is_none());
    }

    #[test]
    fn names_spanning_many_chunks_stay_whole() {
        // 200 names of ~1 KiB fill four chunks; each must come back whole.
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
        assert!(k.names.len() >= 3);
        for i in 0..200 {
            let hit = k.lookup(0xffffffff81000000 + i as u64 * 16 + 3).unwrap();
            assert_eq!(hit.name, name(i));
        }
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
        match KernelSymbols::load() {
            Ok(k) => assert!(k.len() > 1000),
            // Unprivileged test runs see zeros.
            Err(KallsymsError::Hidden) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
