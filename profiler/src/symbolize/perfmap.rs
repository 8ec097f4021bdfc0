//! JIT symbol maps (`/tmp/perf-PID.map`), the format V8, the JVM's
//! perf-map-agent, .NET and LuaJIT write: one `START SIZE NAME` per line,
//! hexadecimal, in the process's own mount and pid namespace.

use std::io::BufRead;

/// One process's JIT symbols, sorted.
#[derive(Debug, Default)]
pub struct PerfMap {
    entries: Vec<(u64, u64, String)>,
}

impl PerfMap {
    /// Parses a perf map; malformed lines are skipped.
    pub fn parse(reader: impl BufRead) -> Self {
        let mut entries: Vec<(u64, u64, String)> = reader
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let name = parts.next()?.trim();
                (!name.is_empty() && size > 0).then(|| (start, size, name.to_owned()))
            })
            .collect();
        // Later lines describe newer code at a reused address: keep the last.
        entries.reverse();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        Self { entries }
    }

    /// The JIT symbol covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= addr)
            .checked_sub(1)?;
        let (start, size, name) = &self.entries[i];
        (addr - start < *size).then_some(name.as_str())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let text = "\
7f0000001000 40 LazyCompile:*fib /app/fib.js:3
7f0000002000 0x20 Builtin:ArgumentsAdaptorTrampoline
garbage line
7f0000003000 10 stub with spaces in name
7f0000001000 40 LazyCompile:*fib2 /app/fib.js:9
";
        let m = PerfMap::parse(text.as_bytes());
        assert_eq!(m.len(), 3);
        assert_eq!(
            m.lookup(0x7f000000103f),
            Some("LazyCompile:*fib2 /app/fib.js:9")
        );
        assert_eq!(m.lookup(0x7f0000001040), None);
        assert_eq!(
            m.lookup(0x7f0000002010),
            Some("Builtin:ArgumentsAdaptorTrampoline")
        );
        assert_eq!(m.lookup(0x7f0000003005), Some("stub with spaces in name"));
        assert_eq!(m.lookup(0x10), None);
    }
}
