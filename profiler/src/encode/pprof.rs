//! A [`Profile`] as a gzipped pprof `profile.proto`.
//!
//! Sample types `samples/count` and `cpu/nanoseconds`, period type
//! `cpu/nanoseconds`; ids are 1-based table positions; every string is in
//! the string table once, with "" at index 0. Labels: `process.pid`,
//! `thread.id` and `cpu.logical_number` (numbers), `thread.name` and
//! `process.executable.name`; for Go, `go.goroutine.id` (number),
//! `go.goroutine.state`, `go.goroutine.wait_reason` (when waiting) and
//! every pprof label of the goroutine under its own key, as Go's
//! runtime/pprof writes them.

use hashbrown::HashMap;
use std::{io::Write, sync::Arc};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::pprof_proto as pb;
use crate::profile::{MappingKind, Profile};

/// Label keys of every sample.
pub mod labels {
    pub const PID: &str = "process.pid";
    pub const TID: &str = "thread.id";
    pub const THREAD_NAME: &str = "thread.name";
    pub const EXECUTABLE_NAME: &str = "process.executable.name";
    pub const CPU: &str = "cpu.logical_number";
    pub const GOROUTINE_ID: &str = "go.goroutine.id";
    pub const GOROUTINE_STATE: &str = "go.goroutine.state";
    pub const GOROUTINE_WAIT_REASON: &str = "go.goroutine.wait_reason";
    /// "true" when sampled on g0/gsignal working for the goroutine.
    pub const GOROUTINE_SYSTEM_STACK: &str = "go.goroutine.system_stack";
    /// "true" when labels, keys or values were cut at the copy limits.
    pub const GO_LABELS_TRUNCATED: &str = "go.labels.truncated";
    /// "true" when the goroutine had labels whose record was lost.
    pub const GO_LABELS_UNKNOWN: &str = "go.labels.unknown";
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The order mappings are written in: pprof shows the first as "the"
/// binary, so a single-process profile lists its executable first.
fn mapping_order(p: &Profile) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.mappings.len()).collect();
    if let [only] = p.processes.as_slice()
        && let Some(exe) = p
            .mappings
            .iter()
            .position(|m| matches!(m.kind, MappingKind::Object(_)) && *m.filename == *only.exe_path)
    {
        order.retain(|&i| i != exe);
        order.insert(0, exe);
    }
    order
}

/// The encoded (not yet gzipped) pprof message.
///
/// Samples are written one at a time into the output, before the other
/// fields, instead of being built as `pb::Sample` values first: a window at
/// 999 Hz holds tens of thousands of samples with up to ~25 labels each,
/// and materializing them all cost ~25 MiB and a fifth of the daemon's CPU.
/// Protobuf readers accept fields in any order (repeated fields are
/// concatenated), so the string table, which the samples add to, follows.
pub fn to_bytes(p: &Profile, comments: &[String]) -> Vec<u8> {
    let mut s = Strings::new();
    let count = pb::ValueType {
        r#type: s.get("samples"),
        unit: s.get("count"),
    };
    let cpu = pb::ValueType {
        r#type: s.get("cpu"),
        unit: s.get("nanoseconds"),
    };

    let order = mapping_order(p);
    let mut mapping_id = vec![0u64; p.mappings.len()];
    let mapping = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| {
            let m = &p.mappings[i];
            mapping_id[i] = pos as u64 + 1;
            pb::Mapping {
                id: pos as u64 + 1,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename: s.get(&m.filename),
                build_id: m.build_id.as_deref().map_or(0, |b| s.get(b)),
                has_functions: m.has_functions,
                has_filenames: m.has_filenames,
                has_line_numbers: m.has_line_numbers,
                has_inline_frames: m.has_inline_frames,
            }
        })
        .collect();

    let function = p
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| pb::Function {
            id: i as u64 + 1,
            name: s.get(&f.name),
            system_name: s.get(&f.system_name),
            filename: s.get(&f.filename),
            start_line: f.start_line,
        })
        .collect();

    let location = p
        .locations
        .iter()
        .enumerate()
        .map(|(i, l)| pb::Location {
            id: i as u64 + 1,
            mapping_id: mapping_id[l.mapping as usize],
            address: l.address,
            line: l
                .lines
                .iter()
                .map(|line| pb::Line {
                    function_id: u64::from(line.function) + 1,
                    line: line.line,
                    column: 0,
                })
                .collect(),
            is_folded: false,
        })
        .collect();

    let period = i64::try_from(p.period_ns).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    SampleWriter::new(&mut s).write(p, period, &mut out);

    let comment = comments.iter().map(|c| s.get(c)).collect();
    pb::Profile {
        sample_type: vec![count, cpu],
        sample: Vec::new(),
        mapping,
        location,
        function,
        time_nanos: i64::try_from(p.start_ns).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(p.duration_ns).unwrap_or(i64::MAX),
        period_type: Some(cpu),
        period,
        comment,
        default_sample_type: 1,
        string_table: std::mem::take(&mut s.table),
        ..Default::default()
    }
    .encode(&mut out)
    .expect("a Vec grows as needed");
    out
}

/// `Profile.sample`'s field number.
const SAMPLE_TAG: u32 = 2;

/// Encodes samples one by one, reusing one `pb::Sample`; a Go label set's
/// labels are converted once per profile, not once per sample.
struct SampleWriter<'s> {
    s: &'s mut Strings,
    keys: [i64; 5],
    cpu_unit: i64,
    goroutine_id: i64,
    /// Label set address → its labels (the profile holds the sets).
    set_labels: HashMap<usize, Vec<pb::Label>>,
}

impl<'s> SampleWriter<'s> {
    fn new(s: &'s mut Strings) -> Self {
        let keys = [
            s.get(labels::PID),
            s.get(labels::TID),
            s.get(labels::THREAD_NAME),
            s.get(labels::EXECUTABLE_NAME),
            s.get(labels::CPU),
        ];
        let cpu_unit = s.get("{cpu}");
        let goroutine_id = s.get(labels::GOROUTINE_ID);
        Self {
            s,
            keys,
            cpu_unit,
            goroutine_id,
            set_labels: HashMap::new(),
        }
    }

    fn str_label(s: &mut Strings, k: &str, v: &str) -> pb::Label {
        pb::Label {
            key: s.get(k),
            str: s.get(v),
            ..Default::default()
        }
    }

    fn write(mut self, p: &Profile, period: i64, out: &mut Vec<u8>) {
        let mut smp = pb::Sample::default();
        for sample in &p.samples {
            let proc = &p.processes[sample.process as usize];
            let count = i64::try_from(sample.count).unwrap_or(i64::MAX);
            smp.location_id.clear();
            smp.location_id.extend(
                p.stacks[sample.stack as usize]
                    .iter()
                    .map(|&l| u64::from(l) + 1),
            );
            smp.value.clear();
            smp.value.extend([count, count.saturating_mul(period)]);
            let keys = self.keys;
            smp.label.clear();
            smp.label.extend([
                pb::Label {
                    key: keys[0],
                    num: i64::from(proc.pid),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[1],
                    num: i64::from(sample.tid),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[2],
                    str: self.s.get(&sample.thread_name),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[3],
                    str: self.s.get(&proc.exe_name),
                    ..Default::default()
                },
                // With a unit, pprof keeps the label when the CPU is 0 (a
                // numeric label with neither value nor unit is dropped).
                pb::Label {
                    key: keys[4],
                    num: i64::from(sample.cpu),
                    num_unit: self.cpu_unit,
                    ..Default::default()
                },
            ]);
            if let Some(go) = &sample.go {
                let s = &mut *self.s;
                smp.label.push(pb::Label {
                    key: self.goroutine_id,
                    num: i64::try_from(go.goid).unwrap_or(i64::MAX),
                    ..Default::default()
                });
                smp.label
                    .push(Self::str_label(s, labels::GOROUTINE_STATE, go.state));
                if let Some(r) = &go.wait_reason {
                    smp.label
                        .push(Self::str_label(s, labels::GOROUTINE_WAIT_REASON, r));
                }
                if go.system_stack {
                    smp.label
                        .push(Self::str_label(s, labels::GOROUTINE_SYSTEM_STACK, "true"));
                }
                if go.labels_unknown {
                    smp.label
                        .push(Self::str_label(s, labels::GO_LABELS_UNKNOWN, "true"));
                }
                if let Some(set) = &go.labels {
                    let cached = self
                        .set_labels
                        .entry(Arc::as_ptr(set) as usize)
                        .or_insert_with(|| {
                            let mut v: Vec<_> = set
                                .labels
                                .iter()
                                .map(|(k, v)| Self::str_label(s, k, v))
                                .collect();
                            if set.truncated {
                                v.push(Self::str_label(s, labels::GO_LABELS_TRUNCATED, "true"));
                            }
                            v
                        });
                    smp.label.extend_from_slice(cached);
                }
            }
            prost::encoding::message::encode(SAMPLE_TAG, &smp, out);
        }
    }
}

/// The gzipped encoding of `p`. Fastest gzip level: a window's profile is
/// mostly sample records with small varints, which level 1 compresses
/// nearly as well as the default level 6 at a fraction of the CPU (the
/// largest per-window cost of the daemon at high rates otherwise).
pub fn encode(p: &Profile, comments: &[String]) -> Vec<u8> {
    let raw = to_bytes(p, comments);
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    gz.write_all(&raw).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, io::Read};

    use pprof::protos::Message as _;

    use super::*;

    /// Decodes with the `pprof` crate's independently generated types.
    fn decode(gz: &[u8]) -> pprof::protos::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .unwrap();
        pprof::protos::Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn independent_decoder_reads_everything() {
        let p = crate::profile::example();
        let d = decode(&encode(&p, &["made by a test".into()]));
        let st = |i: i64| d.string_table[i as usize].as_str();
        assert_eq!(st(0), "");
        let types: Vec<_> = d
            .sample_type
            .iter()
            .map(|t| (st(t.ty), st(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let pt = d.period_type.as_ref().unwrap();
        assert_eq!((st(pt.ty), st(pt.unit)), ("cpu", "nanoseconds"));
        assert_eq!(d.period, 10_101_010);
        assert_eq!(d.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(d.duration_nanos, 10_000_000_000);
        assert_eq!(st(d.comment[0]), "made by a test");

        // The executable's mapping comes first; ids are 1-based positions.
        assert_eq!(st(d.mapping[0].filename), "/bin/app");
        assert_eq!(st(d.mapping[1].filename), "[kernel.kallsyms]");
        assert_eq!(d.location[2].mapping_id, 2);
        assert_eq!(d.location[0].mapping_id, 1);
        assert!(d.mapping[0].has_inline_frames && !d.mapping[1].has_functions);

        // Inline frames: one Line each, innermost first.
        let names: Vec<_> = d.location[0]
            .line
            .iter()
            .map(|l| st(d.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["inner", "outer"]);
        let f = &d.function[0];
        assert_eq!(
            (st(f.system_name), st(f.filename), f.start_line),
            ("_Zinner", "a.c", 3)
        );

        // Values and labels.
        let s = &d.sample[1];
        assert_eq!(s.location_id, [3, 1, 2]);
        assert_eq!(s.value, [2, 2 * 10_101_010]);
        let labels: Vec<_> = s
            .label
            .iter()
            .map(|l| (st(l.key), st(l.str), l.num))
            .collect();
        assert_eq!(
            labels,
            [
                ("process.pid", "", 99),
                ("thread.id", "", 101),
                ("thread.name", "io", 0),
                ("process.executable.name", "app", 0),
                ("cpu.logical_number", "", 1),
            ]
        );
    }

    #[test]
    fn string_table_has_no_duplicates() {
        let d = decode(&encode(&crate::profile::example(), &[]));
        let set: HashSet<_> = d.string_table.iter().collect();
        assert_eq!(set.len(), d.string_table.len());
    }

    #[test]
    fn goroutine_labels_are_written_per_sample_from_a_shared_set() {
        use crate::{golang::samples::LabelSet, profile::GoState};
        let mut p = crate::profile::example();
        let set = Arc::new(LabelSet {
            labels: vec![("route".into(), "/a".into()), ("user".into(), "7".into())],
            truncated: true,
        });
        let go = |goid, labels: Option<&Arc<LabelSet>>| GoState {
            goid,
            state: "waiting",
            wait_reason: Some("chan receive".into()),
            system_stack: false,
            labels: labels.map(Arc::clone),
            labels_unknown: labels.is_none(),
        };
        let mut second = p.samples[0].clone();
        p.samples[0].go = Some(go(17, Some(&set)));
        second.go = Some(go(18, Some(&set)));
        p.samples.push(second);
        p.samples[1].go = Some(go(19, None));
        let d = decode(&encode(&p, &[]));
        let st = |i: i64| d.string_table[i as usize].as_str();
        let go_labels = |i: usize| -> Vec<(String, String, i64)> {
            d.sample[i].label[5..]
                .iter()
                .map(|l| (st(l.key).to_owned(), st(l.str).to_owned(), l.num))
                .collect()
        };
        let with_set = |goid| {
            vec![
                ("go.goroutine.id".to_owned(), String::new(), goid),
                ("go.goroutine.state".into(), "waiting".into(), 0),
                ("go.goroutine.wait_reason".into(), "chan receive".into(), 0),
                ("route".into(), "/a".into(), 0),
                ("user".into(), "7".into(), 0),
                ("go.labels.truncated".into(), "true".into(), 0),
            ]
        };
        assert_eq!(d.sample.len(), 3);
        assert_eq!(go_labels(0), with_set(17));
        assert_eq!(go_labels(2), with_set(18));
        assert_eq!(
            go_labels(1),
            [
                ("go.goroutine.id".to_owned(), String::new(), 19),
                ("go.goroutine.state".into(), "waiting".into(), 0),
                ("go.goroutine.wait_reason".into(), "chan receive".into(), 0),
                ("go.labels.unknown".into(), "true".into(), 0),
            ]
        );
        // Every sample keeps its own stack and values.
        assert_eq!(d.sample[2].location_id, d.sample[0].location_id);
        assert_eq!(d.sample[1].location_id, [3, 1, 2]);
    }
}
