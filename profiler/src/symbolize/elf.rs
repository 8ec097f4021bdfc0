//! Function symbols of an ELF file (`.symtab` and `.dynsym`, plus a
//! `NAME@plt` symbol per x86-64 PLT stub), sorted for binary search. Names
//! live in one string buffer to keep large tables small.

use std::{borrow::Cow, collections::HashMap};

use object::{
    Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SectionKind,
    SymbolKind, SymbolScope,
};

#[derive(Clone, Copy, Debug)]
struct Sym {
    addr: u64,
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// A sorted function symbol table.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    syms: Vec<Sym>,
    names: String,
}

/// A symbol that covers an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolHit<'a> {
    pub name: &'a str,
    pub start: u64,
}

impl ElfSymbols {
    /// Collects the function symbols of every file given (an executable and
    /// its separate debug file share addresses).
    pub fn collect<'d>(files: &[&object::File<'d>]) -> Self {
        // (addr, rank, size, name); lower rank wins at equal addresses. Names
        // borrow from the file until they are copied into the one buffer (a
        // String each made large tables cost several times their size).
        let mut raw: Vec<(u64, u8, u64, Cow<'d, str>)> = Vec::new();
        // Ends of executable sections: an unsized symbol stops at its section's end.
        let mut section_ends: Vec<(u64, u64)> = Vec::new();
        for file in files {
            for sym in file.symbols().chain(file.dynamic_symbols()) {
                if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
                    continue;
                }
                let Ok(name) = sym.name() else { continue };
                if name.is_empty() {
                    continue;
                }
                let rank = match sym.scope() {
                    SymbolScope::Dynamic | SymbolScope::Linkage if !sym.is_weak() => 0,
                    SymbolScope::Dynamic | SymbolScope::Linkage => 1,
                    _ => 2,
                };
                raw.push((sym.address(), rank, sym.size(), Cow::Borrowed(name)));
            }
            for (addr, size, name) in plt_stubs(file) {
                raw.push((addr, 0, size, Cow::Owned(name)));
            }
            section_ends.extend(
                file.sections()
                    .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
                    .map(|s| (s.address(), s.address() + s.size())),
            );
        }
        section_ends.sort_unstable();
        raw.sort_by(|a, b| {
            (a.0, a.1, std::cmp::Reverse(a.2)).cmp(&(b.0, b.1, std::cmp::Reverse(b.2)))
        });
        raw.dedup_by_key(|s| s.0);
        let mut out = ElfSymbols::default();
        for (i, (addr, _, size, name)) in raw.iter().enumerate() {
            let size = if *size > 0 {
                *size
            } else {
                // Unsized (assembly) symbols run to the next symbol or the
                // end of their section, whichever comes first.
                let next = raw.get(i + 1).map_or(u64::MAX, |n| n.0);
                let section_end = section_ends
                    .iter()
                    .filter(|(start, end)| start <= addr && addr < end)
                    .map(|&(_, end)| end)
                    .min()
                    .unwrap_or(u64::MAX);
                match next.min(section_end) {
                    u64::MAX => 1,
                    end => end - addr,
                }
            };
            out.syms.push(Sym {
                addr: *addr,
                size,
                name_start: out.names.len() as u32,
                name_len: name.len() as u32,
            });
            out.names.push_str(name);
        }
        out.syms.shrink_to_fit();
        out.names.shrink_to_fit();
        out
    }

    /// The symbol covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<SymbolHit<'_>> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = self.syms[i];
        (addr - s.addr < s.size).then(|| SymbolHit {
            name: &self.names[s.name_start as usize..(s.name_start + s.name_len) as usize],
            start: s.addr,
        })
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

/// `(address, size, "NAME@plt")` for each x86-64 PLT stub: the stub's
/// `jmp *GOT(%rip)` names the GOT slot, and the dynamic relocation of that
/// slot names the function. Symbol tables have no entries for stubs, yet
/// every call into a shared library passes through one.
fn plt_stubs(file: &object::File<'_>) -> Vec<(u64, u64, String)> {
    let object::File::Elf64(elf) = file else {
        return Vec::new();
    };
    let endian = elf.endian();
    if elf.elf_header().e_machine.get(endian) != object::elf::EM_X86_64 {
        return Vec::new();
    }
    let mut got: HashMap<u64, &str> = HashMap::new();
    if let (Some(relocs), Some(dynsyms)) = (file.dynamic_relocations(), file.dynamic_symbol_table())
    {
        for (offset, rel) in relocs {
            if let RelocationTarget::Symbol(i) = rel.target()
                && let Ok(sym) = dynsyms.symbol_by_index(i)
                && let Ok(name) = sym.name()
                && !name.is_empty()
            {
                got.insert(offset, name);
            }
        }
    }
    let mut out = Vec::new();
    for sec in elf.sections() {
        if !matches!(sec.name(), Ok(".plt" | ".plt.sec" | ".plt.got")) {
            continue;
        }
        let Ok(data) = sec.data() else { continue };
        let entsize = match sec.elf_section_header().sh_entsize.get(endian) {
            8 => 8,
            _ => 16,
        };
        for (i, entry) in data.chunks(entsize).enumerate() {
            // `jmp *disp32(%rip)` is ff 25 disp32 (after endbr64/bnd if any).
            let Some(p) = entry.windows(2).position(|w| w == [0xff, 0x25]) else {
                continue;
            };
            let Some(disp) = entry.get(p + 2..p + 6) else {
                continue;
            };
            let disp = i32::from_le_bytes(disp.try_into().expect("4 bytes"));
            let at = sec.address() + (i * entsize) as u64;
            let slot = (at + p as u64 + 6).wrapping_add_signed(i64::from(disp));
            if let Some(name) = got.get(&slot) {
                out.push((at, entsize as u64, format!("{name}@plt")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_functions() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let syms = ElfSymbols::collect(&[&file]);
        assert!(syms.len() > 100);
        // Every symbol's own start resolves to itself.
        for s in syms.syms.iter().take(200) {
            let hit = syms.lookup(s.addr).unwrap();
            assert_eq!(hit.start, s.addr);
            assert!(syms.lookup(s.addr + s.size - 1).is_some());
        }
        assert!(syms.lookup(0).is_none());
    }

    #[test]
    fn names_plt_stubs() {
        let dir = tempfile::tempdir().unwrap();
        let bin = crate::testutil::compile_c(dir.path(), "p", crate::testutil::ANSWER_C, &["-O2"]);
        let bytes = std::fs::read(&bin).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let stubs = plt_stubs(&file);
        let (addr, size, _) = stubs
            .iter()
            .find(|s| s.2 == "getpid@plt")
            .unwrap_or_else(|| panic!("no getpid@plt in {stubs:?}"));
        let syms = ElfSymbols::collect(&[&file]);
        assert_eq!(syms.lookup(*addr).unwrap().name, "getpid@plt");
        assert_eq!(syms.lookup(addr + size - 1).unwrap().name, "getpid@plt");
    }
}
