//! Function symbols of an ELF file (`.symtab` and `.dynsym`), sorted for
//! binary search. Names live in one string buffer to keep large tables small.

use object::{Object, ObjectSymbol, SymbolKind, SymbolScope};

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
        // (addr, rank, size, name); lower rank wins at equal addresses.
        let mut raw: Vec<(u64, u8, u64, &'d str)> = Vec::new();
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
                raw.push((sym.address(), rank, sym.size(), name));
            }
        }
        raw.sort_by(|a, b| {
            (a.0, a.1, std::cmp::Reverse(a.2)).cmp(&(b.0, b.1, std::cmp::Reverse(b.2)))
        });
        raw.dedup_by_key(|s| s.0);
        let mut out = ElfSymbols::default();
        for (i, &(addr, _, size, name)) in raw.iter().enumerate() {
            let size = if size > 0 {
                size
            } else {
                // Unsized (assembly) symbols run to the next symbol.
                raw.get(i + 1).map_or(4096, |n| n.0 - addr)
            };
            out.syms.push(Sym {
                addr,
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
}
