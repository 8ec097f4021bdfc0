//! The Go part of samples in user space: label sets received from BPF
//! (cached by pid, address and fingerprint, as BPF sends each set once),
//! and the goroutine state decoded from a sample's extension bytes.

use hashbrown::HashMap;
use std::sync::Arc;

use profiler_common::{
    GoLabels,
    golang::{GoSampleExt, go_flags},
};

/// A goroutine's pprof labels, in the runtime's order (sorted by key for
/// Go >= 1.24, hash order before).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    pub labels: Vec<(Arc<str>, Arc<str>)>,
    /// Labels, keys or values were cut at the BPF copy limits.
    pub truncated: bool,
}

impl LabelSet {
    /// Decodes a label-set record.
    pub fn from_record(rec: &GoLabels<'_>) -> Self {
        let mut truncated = (rec.count() as u64) < u64::from(rec.total);
        let labels = rec
            .labels()
            .map(|l| {
                truncated |=
                    l.key().len() < l.key_len as usize || l.value().len() < l.value_len as usize;
                (
                    Arc::from(String::from_utf8_lossy(l.key()).as_ref()),
                    Arc::from(String::from_utf8_lossy(l.value()).as_ref()),
                )
            })
            .collect();
        Self { labels, truncated }
    }

    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

/// What a sample says about its goroutine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoSample {
    pub goid: u64,
    /// `atomicstatus` without the scan bit.
    pub status: u32,
    pub wait_reason: u8,
    /// Sampled on a system stack (g0/gsignal) working for the goroutine.
    pub system_stack: bool,
    pub labels: Labels,
}

/// A sample's label set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    None,
    Known(Arc<LabelSet>),
    /// BPF named a set whose record never arrived (lost in a full ring buffer).
    Unknown,
}

/// Label sets by (pid, address, fingerprint).
#[derive(Default)]
pub struct LabelCache {
    sets: HashMap<(u32, u64, u64), Arc<LabelSet>>,
}

impl LabelCache {
    /// Stores a set BPF sent.
    pub fn insert(&mut self, rec: &GoLabels<'_>) {
        self.sets.insert(
            (rec.pid, rec.labels, rec.fingerprint),
            Arc::new(LabelSet::from_record(rec)),
        );
    }

    /// Forgets the sets of a process that exited or exec'd.
    pub fn forget(&mut self, pid: u32) {
        self.sets.retain(|(p, _, _), _| *p != pid);
    }

    /// Number of cached sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Decodes the extension of a sample of `pid`; `None` when the sample
    /// carries no Go state, or no goroutine ran on the thread.
    pub fn sample(&self, pid: u32, ext: &[u8]) -> Option<GoSample> {
        if ext.len() < std::mem::size_of::<GoSampleExt>() {
            return None;
        }
        // SAFETY: length checked; GoSampleExt is repr(C) integers.
        let e: GoSampleExt = unsafe { std::ptr::read_unaligned(ext.as_ptr().cast()) };
        if e.flags & (go_flags::NO_GOROUTINE | go_flags::READ_ERROR) != 0 {
            return None;
        }
        let labels = if e.labels == 0 {
            Labels::None
        } else {
            match self.sets.get(&(pid, e.labels, e.labels_fingerprint)) {
                Some(set) => Labels::Known(Arc::clone(set)),
                None => Labels::Unknown,
            }
        };
        Some(GoSample {
            goid: e.goid,
            status: e.status,
            wait_reason: e.wait_reason,
            system_stack: e.flags & go_flags::SYSTEM_STACK != 0,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::{
        Record, RecordKind,
        golang::{GoLabel, GoLabelsRecord, MAX_GO_LABELS, labels_record_len},
    };

    use super::*;

    fn record(pid: u32, labels: u64, pairs: &[(&str, &str)], total: u32) -> Vec<u8> {
        let mut list = [GoLabel::EMPTY; MAX_GO_LABELS];
        for (slot, (k, v)) in list.iter_mut().zip(pairs) {
            slot.key[..k.len()].copy_from_slice(k.as_bytes());
            slot.key_len = k.len() as u32;
            slot.value[..v.len()].copy_from_slice(v.as_bytes());
            slot.value_len = v.len() as u32 + u32::from(v.is_empty());
        }
        let rec = GoLabelsRecord {
            kind: RecordKind::GoLabels as u32,
            pid,
            labels,
            fingerprint: 5,
            total,
            count: pairs.len() as u32,
            list,
        };
        // SAFETY: reading the bytes of a repr(C) value.
        unsafe {
            std::slice::from_raw_parts(
                (&rec as *const GoLabelsRecord).cast::<u8>(),
                labels_record_len(pairs.len()),
            )
        }
        .to_vec()
    }

    fn ext(labels: u64, flags: u8) -> Vec<u8> {
        let e = GoSampleExt {
            goid: 17,
            labels,
            labels_fingerprint: 5,
            status: 2,
            wait_reason: 0,
            flags,
            reserved: 0,
        };
        // SAFETY: reading the bytes of a repr(C) value.
        unsafe {
            std::slice::from_raw_parts(
                (&e as *const GoSampleExt).cast::<u8>(),
                std::mem::size_of::<GoSampleExt>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn resolves_label_sets_sent_once() {
        let mut cache = LabelCache::default();
        let bytes = record(9, 0xc000, &[("handler", "/api"), ("tenant", "a")], 2);
        let Ok(Record::GoLabels(rec)) = Record::parse(&bytes) else {
            panic!("labels record")
        };
        cache.insert(&rec);
        let s = cache.sample(9, &ext(0xc000, 0)).unwrap();
        assert_eq!((s.goid, s.status, s.system_stack), (17, 2, false));
        let Labels::Known(set) = &s.labels else {
            panic!("{s:?}")
        };
        assert_eq!(set.get("handler"), Some("/api"));
        assert!(!set.truncated);
        // Another process, or a set never received.
        assert_eq!(
            cache.sample(10, &ext(0xc000, 0)).unwrap().labels,
            Labels::Unknown
        );
        assert_eq!(
            cache
                .sample(9, &ext(0, go_flags::SYSTEM_STACK))
                .unwrap()
                .labels,
            Labels::None
        );
        assert!(cache.sample(9, &ext(0, go_flags::NO_GOROUTINE)).is_none());
        assert!(cache.sample(9, &[]).is_none());
        cache.forget(9);
        assert!(cache.is_empty());
    }

    #[test]
    fn flags_truncated_sets() {
        let bytes = record(9, 1, &[("a", "")], 20);
        let Ok(Record::GoLabels(rec)) = Record::parse(&bytes) else {
            panic!("labels record")
        };
        assert!(LabelSet::from_record(&rec).truncated);
    }
}
