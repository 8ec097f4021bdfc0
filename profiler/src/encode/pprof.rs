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

use std::{collections::HashMap, io::Write};

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

/// Builds the pprof message.
pub fn to_proto(p: &Profile, comments: &[String]) -> pb::Profile {
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

    let keys = [
        s.get(labels::PID),
        s.get(labels::TID),
        s.get(labels::THREAD_NAME),
        s.get(labels::EXECUTABLE_NAME),
        s.get(labels::CPU),
    ];
    let cpu_unit = s.get("{cpu}");
    let period = i64::try_from(p.period_ns).unwrap_or(i64::MAX);
    let sample = p
        .samples
        .iter()
        .map(|smp| {
            let proc = &p.processes[smp.process as usize];
            let count = i64::try_from(smp.count).unwrap_or(i64::MAX);
            let mut label = vec![
                pb::Label {
                    key: keys[0],
                    num: i64::from(proc.pid),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[1],
                    num: i64::from(smp.tid),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[2],
                    str: s.get(&smp.thread_name),
                    ..Default::default()
                },
                pb::Label {
                    key: keys[3],
                    str: s.get(&proc.exe_name),
                    ..Default::default()
                },
                // With a unit, pprof keeps the label when the CPU is 0 (a
                // numeric label with neither value nor unit is dropped).
                pb::Label {
                    key: keys[4],
                    num: i64::from(smp.cpu),
                    num_unit: cpu_unit,
                    ..Default::default()
                },
            ];
            if let Some(go) = &smp.go {
                let mut str_label = |k: &str, v: &str| pb::Label {
                    key: s.get(k),
                    str: s.get(v),
                    ..Default::default()
                };
                let mut extra = vec![str_label(labels::GOROUTINE_STATE, go.state)];
                if let Some(r) = &go.wait_reason {
                    extra.push(str_label(labels::GOROUTINE_WAIT_REASON, r));
                }
                if go.system_stack {
                    extra.push(str_label(labels::GOROUTINE_SYSTEM_STACK, "true"));
                }
                if go.labels_unknown {
                    extra.push(str_label(labels::GO_LABELS_UNKNOWN, "true"));
                }
                if let Some(set) = &go.labels {
                    for (k, v) in &set.labels {
                        extra.push(str_label(k, v));
                    }
                    if set.truncated {
                        extra.push(str_label(labels::GO_LABELS_TRUNCATED, "true"));
                    }
                }
                label.push(pb::Label {
                    key: s.get(labels::GOROUTINE_ID),
                    num: i64::try_from(go.goid).unwrap_or(i64::MAX),
                    ..Default::default()
                });
                label.extend(extra);
            }
            pb::Sample {
                location_id: p.stacks[smp.stack as usize]
                    .iter()
                    .map(|&l| u64::from(l) + 1)
                    .collect(),
                value: vec![count, count.saturating_mul(period)],
                label,
            }
        })
        .collect();

    let comment = comments.iter().map(|c| s.get(c)).collect();
    pb::Profile {
        sample_type: vec![count, cpu],
        sample,
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
}

/// The gzipped encoding of `p`. Fastest gzip level: a window's profile is
/// mostly sample records with small varints, which level 1 compresses
/// nearly as well as the default level 6 at a fraction of the CPU (the
/// largest per-window cost of the daemon at high rates otherwise).
pub fn encode(p: &Profile, comments: &[String]) -> Vec<u8> {
    let raw = to_proto(p, comments).encode_to_vec();
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
}
