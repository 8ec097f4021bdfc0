//! Ranges of the shared BPF row and page arrays, and table ids: first-fit
//! allocation with coalescing on free, so tables of any size come and go as
//! processes start and end.

use std::collections::BTreeMap;

/// A range `[start, start + len)` of array entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u32,
    pub len: u32,
}

/// Free ranges of an array of `capacity` entries.
#[derive(Clone, Debug)]
pub struct RangeAlloc {
    /// Free ranges by start; never adjacent (they are merged).
    free: BTreeMap<u32, u32>,
    capacity: u32,
    used: u64,
}

impl RangeAlloc {
    /// Everything free.
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self {
            free,
            capacity,
            used: 0,
        }
    }

    /// The first free range of `len` entries (`len > 0`), or `None` if no
    /// free range is that long.
    pub fn alloc(&mut self, len: u32) -> Option<Range> {
        if len == 0 {
            return None;
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        self.used += u64::from(len);
        Some(Range { start, len })
    }

    /// Returns `r` (which [`alloc`](Self::alloc) gave out) to the free list.
    pub fn free(&mut self, r: Range) {
        if r.len == 0 {
            return;
        }
        let mut start = r.start;
        let mut len = r.len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(next_len) = self.free.remove(&(r.start + r.len)) {
            len += next_len;
        }
        self.free.insert(start, len);
        self.used = self.used.saturating_sub(u64::from(r.len));
    }

    /// Entries given out.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Entries in all.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The longest free range.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }
}

/// Table ids `0..capacity`, lowest free first.
#[derive(Clone, Debug)]
pub struct IdAlloc {
    next: u32,
    capacity: u32,
    free: Vec<u32>,
}

impl IdAlloc {
    pub fn new(capacity: u32) -> Self {
        Self {
            next: 0,
            capacity,
            free: Vec::new(),
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        (self.next < self.capacity).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub fn free(&mut self, id: u32) {
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_first_fit_and_coalesce() {
        let mut a = RangeAlloc::new(100);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(30).unwrap();
        assert_eq!((x.start, y.start, z.start), (0, 30, 60));
        assert_eq!(a.alloc(11), None);
        assert_eq!(a.used(), 90);
        a.free(y);
        // The hole is reused first.
        assert_eq!(a.alloc(10).unwrap().start, 30);
        assert_eq!(a.largest_free(), 20);
        a.free(Range { start: 30, len: 10 });
        a.free(x);
        a.free(z);
        // Everything merged back into one range.
        assert_eq!(a.largest_free(), 100);
        assert_eq!(a.used(), 0);
        assert_eq!(a.alloc(100).unwrap().start, 0);
        assert_eq!(a.alloc(0), None);
        assert_eq!(RangeAlloc::new(0).alloc(1), None);
    }

    #[test]
    fn ids_are_reused_and_bounded() {
        let mut ids = IdAlloc::new(2);
        assert_eq!(
            (ids.alloc(), ids.alloc(), ids.alloc()),
            (Some(0), Some(1), None)
        );
        ids.free(0);
        assert_eq!(ids.alloc(), Some(0));
    }
}
