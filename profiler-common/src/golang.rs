//! Goroutine state as the BPF program reads it, and the reading itself.
//!
//! The algorithm lives here, `no_std` and generic over [`GoMemory`], so the
//! BPF program (backed by `bpf_probe_read_user`) and the daemon's host-side
//! reader (backed by `/proc/PID/mem`, checked against live Go processes of
//! every supported version) run the same code. Every loop has a constant
//! bound and every copy a bounded length, for the verifier.
//!
//! Per sample of a Go process the program reads the `g` in TLS, follows
//! `g.m.curg` (a sample on `g0` or `gsignal` is marked, not dropped), and
//! records the goroutine id, status (scan bit stripped), wait reason and the
//! address of its pprof label set with a fingerprint of it ([`GoSampleExt`]).
//! Label sets are immutable in Go (setting labels makes a new set), so the
//! label strings are sent once per set, in a separate [`GoLabelsRecord`],
//! and the daemon caches them by (pid, address, fingerprint).

/// Labels copied per set at most.
pub const MAX_GO_LABELS: usize = 16;
/// Key bytes copied at most.
pub const GO_LABEL_KEY: usize = 64;
/// Value bytes copied at most.
pub const GO_LABEL_VALUE: usize = 128;
/// Map buckets (new, old, overflow) read at most for a Go <= 1.23 label map.
pub const MAX_BUCKET_READS: usize = 16;
/// Largest map bucket handled (`map[string]string`: 8 + 8×16 + 8×16 + 8).
pub const MAX_BUCKET_BYTES: usize = 272;

/// How a goroutine's pprof label set is laid out.
pub mod labels_layout {
    /// The binary has no labels (does not link runtime/pprof).
    pub const NONE: u8 = 0;
    /// Go <= 1.23: `g.labels` → map variable → `hmap` of `map[string]string`.
    pub const MAP: u8 = 1;
    /// Go >= 1.24: `g.labels` → struct holding a sorted `[]struct{key, value string}`.
    pub const SLICE: u8 = 2;
}

/// Runtime offsets for one Go version/binary, as BPF reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    pub g_m: u16,
    pub g_goid: u16,
    pub g_atomicstatus: u16,
    pub g_waitreason: u16,
    pub g_labels: u16,
    pub m_curg: u16,
    /// [`labels_layout`] value.
    pub labels_layout: u8,
    /// Map layout: a slot is live iff its tophash >= this.
    pub min_top_hash: u8,
    /// Map layout: the `hmap.flags` bit of a same-size grow.
    pub same_size_grow: u8,
    /// Map layout: entries per bucket.
    pub bucket_slots: u8,
    /// The scan bit of `atomicstatus`.
    pub status_scan: u32,
    pub hmap_count: u16,
    pub hmap_flags: u16,
    pub hmap_b: u16,
    pub hmap_buckets: u16,
    pub hmap_oldbuckets: u16,
    pub bucket_size: u16,
    pub bucket_tophash: u16,
    pub bucket_keys: u16,
    pub bucket_values: u16,
    pub bucket_overflow: u16,
    /// Slice layout: offset of the slice header in the label set.
    pub slice_list: u16,
    /// Slice layout: size of one label.
    pub label_size: u16,
    pub label_key: u16,
    pub label_value: u16,
}

/// Bits of [`GoSampleExt::flags`].
pub mod go_flags {
    /// The thread ran on a system goroutine (`g0`/`gsignal`); the state is
    /// that of `m.curg`, the goroutine it works for.
    pub const SYSTEM_STACK: u8 = 1 << 0;
    /// No user goroutine on this thread (no `g` in TLS, or no `m.curg`).
    pub const NO_GOROUTINE: u8 = 1 << 1;
    /// A read of the runtime's memory failed.
    pub const READ_ERROR: u8 = 1 << 2;
    /// The label set was sent in a [`super::GoLabelsRecord`] before this sample.
    pub const LABELS_SENT: u8 = 1 << 3;
}

/// The Go part of a sample record (its `ext` bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoSampleExt {
    pub goid: u64,
    /// Address of the goroutine's label set; 0 for none.
    pub labels: u64,
    /// Fingerprint of the label set (its storage pointer and length), so a
    /// reused address is not mistaken for an old set.
    pub labels_fingerprint: u64,
    /// `atomicstatus` without the scan bit.
    pub status: u32,
    pub wait_reason: u8,
    /// [`go_flags`] bits.
    pub flags: u8,
    pub reserved: u16,
}

/// One label as copied; the lengths are the full ones (a longer string was
/// cut at the copy size).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoLabel {
    pub key_len: u32,
    pub value_len: u32,
    pub key: [u8; GO_LABEL_KEY],
    pub value: [u8; GO_LABEL_VALUE],
}

impl GoLabel {
    /// An empty label.
    pub const EMPTY: GoLabel = GoLabel {
        key_len: 0,
        value_len: 0,
        key: [0; GO_LABEL_KEY],
        value: [0; GO_LABEL_VALUE],
    };

    /// The copied part of the key.
    pub fn key(&self) -> &[u8] {
        &self.key[..(self.key_len as usize).min(GO_LABEL_KEY)]
    }

    /// The copied part of the value.
    pub fn value(&self) -> &[u8] {
        &self.value[..(self.value_len as usize).min(GO_LABEL_VALUE)]
    }
}

/// A label set, sent once per (pid, set) before the first sample using it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoLabelsRecord {
    /// `RecordKind::GoLabels`.
    pub kind: u32,
    pub pid: u32,
    /// Address of the set ([`GoSampleExt::labels`]).
    pub labels: u64,
    pub fingerprint: u64,
    /// Labels the runtime says the set has.
    pub total: u32,
    /// Labels copied into `list`.
    pub count: u32,
    pub list: [GoLabel; MAX_GO_LABELS],
}

impl GoLabelsRecord {
    /// A record with no labels, to be filled.
    pub const EMPTY: GoLabelsRecord = GoLabelsRecord {
        kind: 0,
        pid: 0,
        labels: 0,
        fingerprint: 0,
        total: 0,
        count: 0,
        list: [GoLabel::EMPTY; MAX_GO_LABELS],
    };
}

/// Bytes of a labels record holding `count` labels.
pub const fn labels_record_len(count: usize) -> usize {
    core::mem::size_of::<GoLabelsRecord>()
        - (MAX_GO_LABELS - count) * core::mem::size_of::<GoLabel>()
}

/// Reads the traced process's memory.
pub trait GoMemory {
    /// Fills `dst` from `addr`; false if unreadable.
    fn read(&self, addr: u64, dst: &mut [u8]) -> bool;

    /// The little-endian u64 at `addr`.
    #[inline(always)]
    fn u64_at(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// The little-endian u32 at `addr`.
    #[inline(always)]
    fn u32_at(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// The byte at `addr`.
    #[inline(always)]
    fn u8_at(&self, addr: u64) -> Option<u8> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b).then_some(b[0])
    }
}

#[inline(always)]
fn fingerprint(a: u64, b: u64) -> u64 {
    a.rotate_left(17) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[inline(always)]
fn at(base: u64, off: u16) -> u64 {
    base.wrapping_add(u64::from(off))
}

/// Reads the state of the goroutine running on a thread whose TLS `g`
/// pointer is `g` into `out`. Always leaves `out` meaningful: failures set
/// [`go_flags::READ_ERROR`] or [`go_flags::NO_GOROUTINE`].
#[inline(always)]
pub fn read_state<M: GoMemory + ?Sized>(mem: &M, g: u64, o: &GoOffsets, out: &mut GoSampleExt) {
    *out = GoSampleExt {
        status: u32::MAX,
        ..GoSampleExt::default()
    };
    if g == 0 {
        out.flags |= go_flags::NO_GOROUTINE;
        return;
    }
    let Some(m) = mem.u64_at(at(g, o.g_m)) else {
        out.flags |= go_flags::READ_ERROR;
        return;
    };
    if m == 0 {
        out.flags |= go_flags::NO_GOROUTINE;
        return;
    }
    let Some(curg) = mem.u64_at(at(m, o.m_curg)) else {
        out.flags |= go_flags::READ_ERROR;
        return;
    };
    if curg != g {
        out.flags |= go_flags::SYSTEM_STACK;
    }
    if curg == 0 {
        out.flags |= go_flags::NO_GOROUTINE;
        return;
    }
    let (Some(goid), Some(status), Some(reason), Some(labels)) = (
        mem.u64_at(at(curg, o.g_goid)),
        mem.u32_at(at(curg, o.g_atomicstatus)),
        mem.u8_at(at(curg, o.g_waitreason)),
        mem.u64_at(at(curg, o.g_labels)),
    ) else {
        out.flags |= go_flags::READ_ERROR;
        return;
    };
    out.goid = goid;
    out.status = status & !o.status_scan;
    out.wait_reason = reason;
    if labels != 0 && o.labels_layout != labels_layout::NONE {
        match labels_fingerprint(mem, labels, o) {
            Some(fp) => {
                out.labels = labels;
                out.labels_fingerprint = fp;
            }
            None => out.flags |= go_flags::READ_ERROR,
        }
    }
}

/// A fingerprint of the set at `labels`: its storage pointer and length.
#[inline(always)]
pub fn labels_fingerprint<M: GoMemory + ?Sized>(
    mem: &M,
    labels: u64,
    o: &GoOffsets,
) -> Option<u64> {
    if o.labels_layout == labels_layout::SLICE {
        let header = at(labels, o.slice_list);
        Some(fingerprint(
            mem.u64_at(header)?,
            mem.u64_at(header.wrapping_add(8))?,
        ))
    } else {
        let hmap = mem.u64_at(labels)?;
        if hmap == 0 {
            return Some(0);
        }
        let buckets = mem.u64_at(at(hmap, o.hmap_buckets))?;
        let count = mem.u64_at(at(hmap, o.hmap_count))?;
        Some(fingerprint(hmap ^ buckets, count))
    }
}

/// Copies the Go string at (`ptr`, `len`) into `dst`, cut at its size;
/// returns the full length.
#[inline(always)]
fn copy_string<M: GoMemory + ?Sized, const N: usize>(
    mem: &M,
    ptr: u64,
    len: u64,
    dst: &mut [u8; N],
) -> Option<u32> {
    let n = if len > N as u64 { N } else { len as usize };
    if n > 0 {
        let part = dst.get_mut(..n)?;
        if !mem.read(ptr, part) {
            return None;
        }
    }
    Some(u32::try_from(len).unwrap_or(u32::MAX))
}

/// The little-endian u64 at `off` of a copied bucket or label. The bound
/// check is written so the verifier sees it on the register it indexes with.
#[inline(always)]
fn word_at(bytes: &[u8; MAX_BUCKET_BYTES], off: usize) -> Option<u64> {
    if off > MAX_BUCKET_BYTES - 8 {
        return None;
    }
    // SAFETY: `off + 8 <= MAX_BUCKET_BYTES`.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().add(off).cast::<u64>()) })
}

/// The byte at `off` of a copied bucket.
#[inline(always)]
fn byte_at(bytes: &[u8; MAX_BUCKET_BYTES], off: usize) -> Option<u8> {
    if off > MAX_BUCKET_BYTES - 1 {
        return None;
    }
    // SAFETY: `off < MAX_BUCKET_BYTES`.
    Some(unsafe { *bytes.as_ptr().add(off) })
}

/// The Go string header (pointer, length) at `off` of copied bytes.
#[inline(always)]
fn string_header(bytes: &[u8; MAX_BUCKET_BYTES], off: usize) -> Option<(u64, u64)> {
    Some((word_at(bytes, off)?, word_at(bytes, off + 8)?))
}

/// Copies the label whose key and value string headers are at `key` and
/// `value` of `bytes` (a copied bucket or label) into `out`.
#[inline(always)]
fn read_label<M: GoMemory + ?Sized>(
    mem: &M,
    bytes: &[u8; MAX_BUCKET_BYTES],
    key: usize,
    value: usize,
    out: &mut GoLabel,
) -> Option<()> {
    let (kp, kl) = string_header(bytes, key)?;
    let (vp, vl) = string_header(bytes, value)?;
    out.key_len = copy_string(mem, kp, kl, &mut out.key)?;
    out.value_len = copy_string(mem, vp, vl, &mut out.value)?;
    Some(())
}

/// Steps [`read_labels`] takes at most: one per label slot visited.
pub const MAX_LABEL_STEPS: u32 = (MAX_BUCKET_READS * 8) as u32;

/// Where reading a label set stands between [`labels_step`]s. BPF keeps it
/// in a map so each step can run in its own `bpf_loop` callback.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelsCursor {
    /// Slice: the label array. Map: `hmap.buckets`.
    pub base: u64,
    /// Map: `hmap.oldbuckets`.
    pub old: u64,
    /// Slice length or map count.
    pub len: u64,
    pub nbuckets: u64,
    pub nold: u64,
    pub next_new: u64,
    pub next_old: u64,
    /// Next slot of the loaded bucket (slice: next label index).
    pub slot: u32,
    /// Buckets read so far.
    pub bucket_reads: u32,
    /// A bucket is loaded in the scratch buffer.
    pub loaded: u32,
    pub reserved: u32,
}

/// A read of the traced process's memory failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadError;

/// What a [`labels_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    Done,
    Error,
}

/// Starts reading the set at `labels`: sets `out.total`, clears
/// `out.count`. `None` on a read error or when there is nothing to read.
#[inline(always)]
pub fn labels_begin<M: GoMemory + ?Sized>(
    mem: &M,
    labels: u64,
    o: &GoOffsets,
    out: &mut GoLabelsRecord,
) -> Result<Option<LabelsCursor>, ReadError> {
    out.total = 0;
    out.count = 0;
    let mut c = LabelsCursor::default();
    if o.labels_layout == labels_layout::SLICE {
        let header = at(labels, o.slice_list);
        c.base = mem.u64_at(header).ok_or(ReadError)?;
        c.len = mem.u64_at(header.wrapping_add(8)).ok_or(ReadError)?;
    } else if o.labels_layout == labels_layout::MAP {
        let hmap = mem.u64_at(labels).ok_or(ReadError)?;
        if hmap == 0 {
            return Ok(None);
        }
        c.len = mem.u64_at(at(hmap, o.hmap_count)).ok_or(ReadError)?;
        let flags = mem.u8_at(at(hmap, o.hmap_flags)).ok_or(ReadError)?;
        let b = mem.u8_at(at(hmap, o.hmap_b)).ok_or(ReadError)?;
        c.base = mem.u64_at(at(hmap, o.hmap_buckets)).ok_or(ReadError)?;
        c.old = mem.u64_at(at(hmap, o.hmap_oldbuckets)).ok_or(ReadError)?;
        c.nbuckets = 1u64 << (if b > 32 { 32 } else { b });
        c.nold = if c.old == 0 {
            0
        } else if flags & o.same_size_grow != 0 {
            c.nbuckets
        } else {
            c.nbuckets >> 1
        };
        if c.base == 0 {
            return Ok(None);
        }
    } else {
        return Ok(None);
    }
    out.total = u32::try_from(c.len).unwrap_or(u32::MAX);
    Ok((c.len > 0).then_some(c))
}

/// One step: the next label of a slice, or the next slot of a map (loading
/// the next bucket when the current one is done).
#[inline(always)]
pub fn labels_step<M: GoMemory + ?Sized>(
    mem: &M,
    o: &GoOffsets,
    c: &mut LabelsCursor,
    out: &mut GoLabelsRecord,
    bucket: &mut [u8; MAX_BUCKET_BYTES],
) -> Step {
    let i = out.count as usize;
    if i >= MAX_GO_LABELS || out.count as u64 >= c.len {
        return Step::Done;
    }
    if o.labels_layout == labels_layout::SLICE {
        let size = o.label_size as usize;
        if size > MAX_BUCKET_BYTES {
            return Step::Error;
        }
        let Some(copy) = bucket.get_mut(..size) else {
            return Step::Error;
        };
        if !mem.read(c.base.wrapping_add((i * size) as u64), copy) {
            return Step::Error;
        }
        let Some(slot) = out.list.get_mut(i) else {
            return Step::Error;
        };
        if read_label(
            mem,
            bucket,
            o.label_key as usize,
            o.label_value as usize,
            slot,
        )
        .is_none()
        {
            return Step::Error;
        }
        out.count += 1;
        return Step::Continue;
    }
    let slots = (o.bucket_slots as u32).min(8);
    let size = o.bucket_size as usize;
    if size > MAX_BUCKET_BYTES {
        return Step::Error;
    }
    if c.loaded == 0 || c.slot >= slots {
        // The next bucket: the overflow of the loaded one, else the next
        // new bucket, else the next old one (the map is growing).
        let overflow = if c.loaded != 0 {
            match word_at(bucket, o.bucket_overflow as usize) {
                Some(v) => v,
                None => return Step::Error,
            }
        } else {
            0
        };
        let addr = if overflow != 0 {
            overflow
        } else if c.next_new < c.nbuckets {
            c.next_new += 1;
            c.base
                .wrapping_add((c.next_new - 1).wrapping_mul(size as u64))
        } else if c.next_old < c.nold {
            c.next_old += 1;
            c.old
                .wrapping_add((c.next_old - 1).wrapping_mul(size as u64))
        } else {
            return Step::Done;
        };
        if c.bucket_reads as usize >= MAX_BUCKET_READS {
            return Step::Done;
        }
        c.bucket_reads += 1;
        let Some(copy) = bucket.get_mut(..size) else {
            return Step::Error;
        };
        if !mem.read(addr, copy) {
            return Step::Error;
        }
        c.loaded = 1;
        c.slot = 0;
    }
    let slot = c.slot as usize;
    c.slot += 1;
    let Some(tophash) = byte_at(bucket, o.bucket_tophash as usize + slot) else {
        return Step::Error;
    };
    if tophash < o.min_top_hash {
        return Step::Continue;
    }
    let stride = (o.bucket_values.saturating_sub(o.bucket_keys) as usize) / (slots.max(1) as usize);
    let key = o.bucket_keys as usize + slot * stride;
    let value = o.bucket_values as usize + slot * stride;
    let Some(dst) = out.list.get_mut(i) else {
        return Step::Error;
    };
    if read_label(mem, bucket, key, value, dst).is_none() {
        return Step::Error;
    }
    out.count += 1;
    Step::Continue
}

/// Reads the label set at `labels` into `out` (`total`, `count`, `list`);
/// `bucket` is scratch space for one map bucket. `None` on a read error.
/// BPF runs the same [`labels_begin`] and [`labels_step`] under `bpf_loop`.
pub fn read_labels<M: GoMemory + ?Sized>(
    mem: &M,
    labels: u64,
    o: &GoOffsets,
    out: &mut GoLabelsRecord,
    bucket: &mut [u8; MAX_BUCKET_BYTES],
) -> Option<()> {
    let Some(mut c) = labels_begin(mem, labels, o, out).ok()? else {
        return Some(());
    };
    for _ in 0..MAX_LABEL_STEPS {
        match labels_step(mem, o, &mut c, out, bucket) {
            Step::Continue => {}
            Step::Done => return Some(()),
            Step::Error => return None,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec::Vec};

    use super::*;

    /// Sparse fake memory.
    #[derive(Default)]
    struct Mem(BTreeMap<u64, u8>);

    impl Mem {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.0.insert(addr + i as u64, *b);
            }
        }
        fn put_u64(&mut self, addr: u64, v: u64) {
            self.put(addr, &v.to_le_bytes());
        }
    }

    impl GoMemory for Mem {
        fn read(&self, addr: u64, dst: &mut [u8]) -> bool {
            for (i, d) in dst.iter_mut().enumerate() {
                match self.0.get(&(addr + i as u64)) {
                    Some(b) => *d = *b,
                    None => return false,
                }
            }
            true
        }
    }

    fn offsets(layout: u8) -> GoOffsets {
        GoOffsets {
            g_m: 48,
            g_goid: 152,
            g_atomicstatus: 144,
            g_waitreason: 176,
            g_labels: 344,
            m_curg: 192,
            labels_layout: layout,
            min_top_hash: 5,
            same_size_grow: 8,
            bucket_slots: 8,
            status_scan: 0x1000,
            hmap_count: 0,
            hmap_flags: 8,
            hmap_b: 9,
            hmap_buckets: 16,
            hmap_oldbuckets: 24,
            bucket_size: 272,
            bucket_tophash: 0,
            bucket_keys: 8,
            bucket_values: 136,
            bucket_overflow: 264,
            slice_list: 0,
            label_size: 32,
            label_key: 0,
            label_value: 16,
        }
    }

    fn string(mem: &mut Mem, at: u64, header: u64, s: &[u8]) {
        mem.put(at, s);
        mem.put_u64(header, at);
        mem.put_u64(header + 8, s.len() as u64);
    }

    /// A goroutine at 0x1000 run by m at 0x2000 on g0 at 0x3000 or itself.
    fn goroutine(mem: &mut Mem, o: &GoOffsets, tls_g: u64, labels: u64) {
        mem.put_u64(tls_g + u64::from(o.g_m), 0x2000);
        mem.put_u64(0x2000 + u64::from(o.m_curg), 0x1000);
        mem.put_u64(0x1000 + u64::from(o.g_goid), 42);
        mem.put(
            0x1000 + u64::from(o.g_atomicstatus),
            &(0x1002u32).to_le_bytes(),
        );
        mem.put(0x1000 + u64::from(o.g_waitreason), &[7]);
        mem.put_u64(0x1000 + u64::from(o.g_labels), labels);
        if tls_g != 0x1000 {
            mem.put_u64(0x1000 + u64::from(o.g_m), 0x2000);
        }
    }

    #[test]
    fn reads_state_and_marks_system_stacks() {
        let o = offsets(labels_layout::SLICE);
        let mut mem = Mem::default();
        goroutine(&mut mem, &o, 0x3000, 0);
        let mut ext = GoSampleExt::default();
        read_state(&mem, 0x3000, &o, &mut ext);
        assert_eq!((ext.goid, ext.status, ext.wait_reason), (42, 2, 7));
        assert_eq!(ext.flags, go_flags::SYSTEM_STACK);
        read_state(&mem, 0, &o, &mut ext);
        assert_eq!(ext.flags, go_flags::NO_GOROUTINE);
        read_state(&mem, 0x9000, &o, &mut ext);
        assert_eq!(ext.flags, go_flags::READ_ERROR);
    }

    #[test]
    fn reads_slice_labels_with_truncation() {
        let o = offsets(labels_layout::SLICE);
        let mut mem = Mem::default();
        goroutine(&mut mem, &o, 0x1000, 0x5000);
        let n = 18u64;
        mem.put_u64(0x5000, 0x6000);
        mem.put_u64(0x5008, n);
        let long = [b'v'; 200];
        for i in 0..n {
            let label = 0x6000 + i * 32;
            let key = std::format!("k{i:02}");
            string(&mut mem, 0x10000 + i * 0x400, label, key.as_bytes());
            let value: &[u8] = if i == 1 { &long } else { b"val" };
            string(&mut mem, 0x10200 + i * 0x400, label + 16, value);
        }
        let mut ext = GoSampleExt::default();
        read_state(&mem, 0x1000, &o, &mut ext);
        assert_eq!((ext.labels, ext.flags), (0x5000, 0));
        assert_ne!(ext.labels_fingerprint, 0);
        let mut rec = GoLabelsRecord::EMPTY;
        let mut bucket = [0u8; MAX_BUCKET_BYTES];
        read_labels(&mem, 0x5000, &o, &mut rec, &mut bucket).unwrap();
        assert_eq!((rec.total, rec.count), (18, 16));
        assert_eq!(rec.list[0].key(), b"k00");
        assert_eq!(rec.list[1].value_len, 200);
        assert_eq!(rec.list[1].value(), &long[..GO_LABEL_VALUE]);
        assert_eq!(rec.list[15].key(), b"k15");
        assert_eq!(
            labels_record_len(3),
            core::mem::size_of::<GoLabelsRecord>() - 13 * core::mem::size_of::<GoLabel>()
        );
    }

    #[test]
    fn reads_map_labels_across_overflow_buckets() {
        let o = offsets(labels_layout::MAP);
        let mut mem = Mem::default();
        goroutine(&mut mem, &o, 0x1000, 0x5000);
        // labelMap variable → hmap at 0x5100 with B=0 (one bucket) + overflow.
        mem.put_u64(0x5000, 0x5100);
        mem.put_u64(0x5100, 10); // count
        mem.put(0x5108, &[0, 0]); // flags, B
        mem.put_u64(0x5110, 0x7000); // buckets
        mem.put_u64(0x5118, 0); // oldbuckets
        let mut keys = Vec::new();
        for (bucket, n) in [(0x7000u64, 8u64), (0x8000, 2)] {
            let mut tophash = [0u8; 8];
            for slot in 0..n {
                tophash[slot as usize] = 9;
                let key = std::format!("key{bucket:x}{slot}");
                let strings = 0x20000 + bucket * 4 + slot * 0x40;
                string(&mut mem, strings, bucket + 8 + slot * 16, key.as_bytes());
                string(&mut mem, strings + 0x20, bucket + 136 + slot * 16, b"v");
                keys.push(key);
            }
            mem.put(bucket, &tophash);
            // Empty slots are zero in a real bucket.
            for slot in n..8 {
                mem.put(bucket + 8 + slot * 16, &[0; 16]);
                mem.put(bucket + 136 + slot * 16, &[0; 16]);
            }
            mem.put_u64(bucket + 264, if bucket == 0x7000 { 0x8000 } else { 0 });
        }
        let mut rec = GoLabelsRecord::EMPTY;
        let mut bucket = [0u8; MAX_BUCKET_BYTES];
        read_labels(&mem, 0x5000, &o, &mut rec, &mut bucket).unwrap();
        assert_eq!((rec.total, rec.count), (10, 10));
        let got: Vec<_> = rec.list[..10]
            .iter()
            .map(|l| std::string::String::from_utf8(l.key().to_vec()).unwrap())
            .collect();
        assert_eq!(got, keys);
    }
}
