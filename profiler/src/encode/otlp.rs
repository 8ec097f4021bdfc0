//! A [`Profile`] as an OTLP `ExportProfilesServiceRequest` (profiles proto
//! v1development, the v1.10 wire), following the spec's dictionary rules:
//! index 0 of every table is the zero value, no table holds duplicates
//! (entries are interned by their encoded bytes), and samples with equal
//! identity (stack, attributes, link) are merged.
//!
//! One `ResourceProfiles` per process, with `process.pid`,
//! `process.executable.{name,path}`, `host.name`, `container.id`,
//! `service.name` and the user's `OTEL_RESOURCE_ATTRIBUTES`; one scope (this
//! profiler); one profile of `samples/count` with period `cpu/nanoseconds`.
//! Each sample carries its timestamps (a value of 1 per timestamp) and the
//! attributes `thread.id`, `thread.name`, `cpu.logical_number`; locations
//! carry `profile.frame.type`; mappings `process.executable.build_id.gnu`
//! (and `.go` for Go binaries). Go samples add `go.goroutine.id`,
//! `go.goroutine.state`, `go.goroutine.wait_reason` and the goroutine's
//! pprof labels as attributes; labels carrying a trace and span id
//! (`trace_id`/`span_id` or `otel.trace_id`/`otel.span_id`, hex) become a
//! Link, so profiles and traces join.

use hashbrown::HashMap;
use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    profiles::v1development as otlp,
    resource::v1::Resource,
};
use prost::Message;

use crate::profile::Profile;

/// Resource attributes that do not come from the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceSettings {
    /// `host.name`.
    pub host_name: String,
    /// `OTEL_SERVICE_NAME`, if set.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub attributes: Vec<(String, String)>,
}

/// Attribute keys used on samples, locations and mappings.
pub mod keys {
    pub const THREAD_ID: &str = "thread.id";
    pub const THREAD_NAME: &str = "thread.name";
    pub const CPU: &str = "cpu.logical_number";
    pub const FRAME_TYPE: &str = "profile.frame.type";
    pub const BUILD_ID_GNU: &str = "process.executable.build_id.gnu";
    pub const BUILD_ID_GO: &str = "process.executable.build_id.go";
}

/// The trace a goroutine's labels name, as an OTLP Link.
pub fn trace_link(labels: &crate::golang::samples::LabelSet) -> Option<otlp::Link> {
    let hex = |s: &str, len: usize| -> Option<Vec<u8>> {
        let s = s.trim();
        if s.len() != len * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        (0..len)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    ["", "otel."].iter().find_map(|prefix| {
        let trace = hex(labels.get(&format!("{prefix}trace_id"))?, 16)?;
        let span = hex(labels.get(&format!("{prefix}span_id"))?, 8)?;
        (trace.iter().any(|&b| b != 0) && span.iter().any(|&b| b != 0)).then_some(otlp::Link {
            trace_id: trace,
            span_id: span,
        })
    })
}

/// An attribute value as the dictionary interns it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AttrValue {
    Int(i64),
    Str(String),
}

/// The shared dictionary under construction.
struct Dict {
    d: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, AttrValue), i32>,
    /// Encoded message → index, per table, for value-based dedup.
    seen: [HashMap<Vec<u8>, i32>; 4],
}

const MAPPINGS: usize = 0;
const LOCATIONS: usize = 1;
const STACKS: usize = 2;
const LINKS: usize = 3;

impl Dict {
    fn new() -> Self {
        let mut d = Dict {
            d: otlp::ProfilesDictionary {
                mapping_table: vec![otlp::Mapping::default()],
                location_table: vec![otlp::Location::default()],
                function_table: vec![otlp::Function::default()],
                link_table: vec![otlp::Link::default()],
                string_table: Vec::new(),
                attribute_table: vec![otlp::KeyValueAndUnit::default()],
                stack_table: vec![otlp::Stack::default()],
            },
            strings: HashMap::new(),
            attributes: HashMap::new(),
            seen: Default::default(),
        };
        d.string("");
        for (table, zero) in [
            (MAPPINGS, otlp::Mapping::default().encode_to_vec()),
            (LOCATIONS, otlp::Location::default().encode_to_vec()),
            (STACKS, otlp::Stack::default().encode_to_vec()),
            (LINKS, otlp::Link::default().encode_to_vec()),
        ] {
            d.seen[table].insert(zero, 0);
        }
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.d.string_table.len() as i32;
        self.d.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: AttrValue) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attributes.get(&(key, value.clone())) {
            return i;
        }
        let any = match &value {
            AttrValue::Int(v) => Value::IntValue(*v),
            AttrValue::Str(s) => Value::StringValue(s.clone()),
        };
        let i = self.d.attribute_table.len() as i32;
        self.d.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue { value: Some(any) }),
            unit_strindex: 0,
        });
        self.attributes.insert((key, value), i);
        i
    }

    /// Interns `msg` into `table` (by its encoding), returning its index.
    fn intern<M: Message>(&mut self, table: usize, msg: M, push: impl FnOnce(&mut Self, M)) -> i32 {
        let bytes = msg.encode_to_vec();
        if let Some(&i) = self.seen[table].get(&bytes) {
            return i;
        }
        let i = match table {
            MAPPINGS => self.d.mapping_table.len(),
            LOCATIONS => self.d.location_table.len(),
            LINKS => self.d.link_table.len(),
            _ => self.d.stack_table.len(),
        } as i32;
        push(self, msg);
        self.seen[table].insert(bytes, i);
        i
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource(p: &Profile, process: usize, res: &ResourceSettings) -> Resource {
    let meta = &p.processes[process];
    // Detected per-process attributes win over OTEL_RESOURCE_ATTRIBUTES;
    // OTEL_SERVICE_NAME wins over a service.name there.
    let mut attrs = vec![
        kv("process.pid", Value::IntValue(i64::from(meta.pid))),
        kv(
            "process.executable.name",
            Value::StringValue(meta.exe_name.to_string()),
        ),
        kv(
            "process.executable.path",
            Value::StringValue(meta.exe_path.to_string()),
        ),
    ];
    if let Some(id) = &meta.container_id {
        attrs.push(kv("container.id", Value::StringValue(id.to_string())));
    }
    let service = res
        .service_name
        .clone()
        .or_else(|| {
            res.attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| format!("unknown_service:{}", meta.exe_name));
    attrs.push(kv("service.name", Value::StringValue(service)));
    let mut host = res.host_name.clone();
    for (k, v) in &res.attributes {
        if k == "host.name" {
            host = v.clone();
        } else if !attrs.iter().any(|a| a.key == *k) {
            attrs.push(kv(k, Value::StringValue(v.clone())));
        }
    }
    attrs.push(kv("host.name", Value::StringValue(host)));
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// Builds the export request for `p`; `profile_id` must be 16 random bytes.
pub fn to_request(
    p: &Profile,
    res: &ResourceSettings,
    profile_id: [u8; 16],
) -> ExportProfilesServiceRequest {
    let mut dict = Dict::new();

    let mappings: Vec<i32> = p
        .mappings
        .iter()
        .map(|m| {
            let mut attribute_indices = Vec::new();
            if let Some(b) = &m.build_id {
                attribute_indices
                    .push(dict.attribute(keys::BUILD_ID_GNU, AttrValue::Str(b.clone())));
            }
            let msg = otlp::Mapping {
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename_strindex: dict.string(&m.filename),
                attribute_indices,
            };
            dict.intern(MAPPINGS, msg, |d, m| d.d.mapping_table.push(m))
        })
        .collect();

    // Profile functions are already unique; the zero entry shifts them by one.
    for f in &p.functions {
        let msg = otlp::Function {
            name_strindex: dict.string(&f.name),
            system_name_strindex: dict.string(&f.system_name),
            filename_strindex: dict.string(&f.filename),
            start_line: f.start_line,
        };
        dict.d.function_table.push(msg);
    }

    let locations: Vec<i32> = p
        .locations
        .iter()
        .map(|l| {
            let frame_type = dict.attribute(
                keys::FRAME_TYPE,
                AttrValue::Str(l.frame_type.as_str().to_owned()),
            );
            let msg = otlp::Location {
                mapping_index: mappings[l.mapping as usize],
                address: l.address,
                lines: l
                    .lines
                    .iter()
                    .map(|line| otlp::Line {
                        function_index: line.function as i32 + 1,
                        line: line.line,
                        column: 0,
                    })
                    .collect(),
                attribute_indices: vec![frame_type],
            };
            dict.intern(LOCATIONS, msg, |d, m| d.d.location_table.push(m))
        })
        .collect();

    let stacks: Vec<i32> = p
        .stacks
        .iter()
        .map(|s| {
            let msg = otlp::Stack {
                location_indices: s.iter().map(|&l| locations[l as usize]).collect(),
            };
            dict.intern(STACKS, msg, |d, m| d.d.stack_table.push(m))
        })
        .collect();

    let sample_type = otlp::ValueType {
        type_strindex: dict.string("samples"),
        unit_strindex: dict.string("count"),
    };
    let period_type = otlp::ValueType {
        type_strindex: dict.string("cpu"),
        unit_strindex: dict.string("nanoseconds"),
    };

    // Samples per process, merged by identity: (stack, attributes, link).
    type Identities = HashMap<(i32, Vec<i32>, i32), Vec<u64>>;
    let mut per_process: Vec<Identities> = vec![HashMap::new(); p.processes.len()];
    for s in &p.samples {
        let mut attrs = vec![
            dict.attribute(keys::THREAD_ID, AttrValue::Int(i64::from(s.tid))),
            dict.attribute(keys::THREAD_NAME, AttrValue::Str(s.thread_name.to_string())),
            dict.attribute(keys::CPU, AttrValue::Int(i64::from(s.cpu))),
        ];
        let mut link = 0;
        if let Some(go) = &s.go {
            go_attributes(&mut dict, go, &mut attrs);
            if let Some(l) = go.labels.as_deref().and_then(trace_link) {
                link = dict.intern(LINKS, l, |d, m| d.d.link_table.push(m));
            }
        }
        per_process[s.process as usize]
            .entry((stacks[s.stack as usize], attrs, link))
            .or_default()
            .extend_from_slice(&s.times_ns);
    }

    let scope = InstrumentationScope {
        name: env!("CARGO_PKG_NAME").to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let resource_profiles = per_process
        .into_iter()
        .enumerate()
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(process, samples)| {
            let mut samples: Vec<otlp::Sample> = samples
                .into_iter()
                .map(
                    |((stack_index, attribute_indices, link_index), mut times)| {
                        times.sort_unstable();
                        otlp::Sample {
                            stack_index,
                            attribute_indices,
                            link_index,
                            values: vec![1; times.len()],
                            timestamps_unix_nano: times,
                        }
                    },
                )
                .collect();
            samples.sort_by(|a, b| {
                (a.stack_index, &a.attribute_indices).cmp(&(b.stack_index, &b.attribute_indices))
            });
            otlp::ResourceProfiles {
                resource: Some(resource(p, process, res)),
                scope_profiles: vec![otlp::ScopeProfiles {
                    scope: Some(scope.clone()),
                    profiles: vec![otlp::Profile {
                        sample_type: Some(sample_type),
                        samples,
                        time_unix_nano: p.start_ns,
                        duration_nano: p.duration_ns,
                        period_type: Some(period_type),
                        period: i64::try_from(p.period_ns).unwrap_or(i64::MAX),
                        profile_id: profile_id.to_vec(),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();

    ExportProfilesServiceRequest {
        resource_profiles,
        dictionary: Some(dict.d),
    }
}

/// Adds a Go sample's goroutine attributes; a pprof label whose key is
/// already an attribute of the sample is left out (keys must be unique).
fn go_attributes(dict: &mut Dict, go: &crate::profile::GoState, attrs: &mut Vec<i32>) {
    use crate::encode::pprof::labels as l;
    let goid = i64::try_from(go.goid).unwrap_or(i64::MAX);
    attrs.push(dict.attribute(l::GOROUTINE_ID, AttrValue::Int(goid)));
    attrs.push(dict.attribute(l::GOROUTINE_STATE, AttrValue::Str(go.state.to_owned())));
    if let Some(r) = &go.wait_reason {
        attrs.push(dict.attribute(l::GOROUTINE_WAIT_REASON, AttrValue::Str(r.to_string())));
    }
    let flag = |key| (key, AttrValue::Str("true".to_owned()));
    let mut extra = Vec::new();
    if go.system_stack {
        extra.push(flag(l::GOROUTINE_SYSTEM_STACK));
    }
    if go.labels_unknown {
        extra.push(flag(l::GO_LABELS_UNKNOWN));
    }
    if let Some(set) = &go.labels {
        if set.truncated {
            extra.push(flag(l::GO_LABELS_TRUNCATED));
        }
        for (k, v) in &set.labels {
            extra.push((k, AttrValue::Str(v.to_string())));
        }
    }
    for (key, value) in extra {
        let i = dict.attribute(key, value);
        let key_index = dict.d.attribute_table[i as usize].key_strindex;
        let taken = attrs
            .iter()
            .any(|&a| dict.d.attribute_table[a as usize].key_strindex == key_index);
        if !taken {
            attrs.push(i);
        }
    }
}

/// The encoded request (uncompressed protobuf).
pub fn encode(p: &Profile, res: &ResourceSettings) -> Vec<u8> {
    let mut id = [0u8; 16];
    fastrand::fill(&mut id);
    // An all-zero id is invalid.
    id[0] |= 1;
    to_request(p, res, id).encode_to_vec()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::profile::example;

    fn settings() -> ResourceSettings {
        ResourceSettings {
            host_name: "node-1".into(),
            service_name: None,
            attributes: vec![
                ("deployment.environment".into(), "test".into()),
                ("process.pid".into(), "1".into()),
            ],
        }
    }

    fn attr(d: &otlp::ProfilesDictionary, i: i32) -> (String, Option<Value>) {
        let a = &d.attribute_table[i as usize];
        (
            d.string_table[a.key_strindex as usize].clone(),
            a.value.as_ref().and_then(|v| v.value.clone()),
        )
    }

    #[test]
    fn dictionary_starts_with_zero_values_and_has_no_duplicates() {
        let req = to_request(&example(), &settings(), [7; 16]);
        let d = req.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], otlp::Mapping::default());
        assert_eq!(d.location_table[0], otlp::Location::default());
        assert_eq!(d.function_table[0], otlp::Function::default());
        assert_eq!(d.link_table[0], otlp::Link::default());
        assert_eq!(d.attribute_table[0], otlp::KeyValueAndUnit::default());
        assert_eq!(d.stack_table[0], otlp::Stack::default());
        let unique = |v: Vec<Vec<u8>>| v.iter().collect::<HashSet<_>>().len() == v.len();
        assert!(unique(
            d.mapping_table.iter().map(|m| m.encode_to_vec()).collect()
        ));
        assert!(unique(
            d.location_table.iter().map(|m| m.encode_to_vec()).collect()
        ));
        assert!(unique(
            d.function_table.iter().map(|m| m.encode_to_vec()).collect()
        ));
        assert!(unique(
            d.stack_table.iter().map(|m| m.encode_to_vec()).collect()
        ));
        assert!(unique(
            d.attribute_table
                .iter()
                .map(|m| m.encode_to_vec())
                .collect()
        ));
        assert!(unique(
            d.string_table
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect()
        ));
    }

    #[test]
    fn content_matches_the_profile() {
        let p = example();
        let req = to_request(&p, &settings(), [7; 16]);
        let d = req.dictionary.as_ref().unwrap();
        let s = |i: i32| d.string_table[i as usize].as_str();
        assert_eq!(req.resource_profiles.len(), 1);
        let rp = &req.resource_profiles[0];
        let attrs: HashMap<_, _> = rp
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| (a.key.as_str(), a.value.clone().unwrap().value.unwrap()))
            .collect();
        assert_eq!(
            attrs["process.pid"],
            Value::IntValue(99),
            "detected pid wins"
        );
        assert_eq!(
            attrs["process.executable.name"],
            Value::StringValue("app".into())
        );
        assert_eq!(
            attrs["service.name"],
            Value::StringValue("unknown_service:app".into())
        );
        assert_eq!(attrs["host.name"], Value::StringValue("node-1".into()));
        assert_eq!(
            attrs["deployment.environment"],
            Value::StringValue("test".into())
        );
        let scope = rp.scope_profiles[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, "profiler");

        let prof = &rp.scope_profiles[0].profiles[0];
        let st = prof.sample_type.unwrap();
        assert_eq!(
            (s(st.type_strindex), s(st.unit_strindex)),
            ("samples", "count")
        );
        let pt = prof.period_type.unwrap();
        assert_eq!(
            (s(pt.type_strindex), s(pt.unit_strindex)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(prof.period, 10_101_010);
        assert_eq!(prof.time_unix_nano, p.start_ns);
        assert_eq!(prof.profile_id, vec![7; 16]);
        let total: usize = prof
            .samples
            .iter()
            .map(|x| x.timestamps_unix_nano.len())
            .sum();
        assert_eq!(total as u64, p.sample_count());
        for smp in &prof.samples {
            assert_eq!(smp.values.len(), smp.timestamps_unix_nano.len());
            let keys: Vec<_> = smp
                .attribute_indices
                .iter()
                .map(|&i| attr(d, i).0)
                .collect();
            assert_eq!(keys, ["thread.id", "thread.name", "cpu.logical_number"]);
        }

        // The inline chain of the first location survives, innermost first.
        let stack = &d.stack_table[prof.samples[0].stack_index as usize];
        let loc = &d.location_table[stack.location_indices[0] as usize];
        let names: Vec<_> = loc
            .lines
            .iter()
            .map(|l| s(d.function_table[l.function_index as usize].name_strindex))
            .collect();
        assert_eq!(names, ["inner", "outer"]);
        assert_eq!(
            attr(d, loc.attribute_indices[0]).1,
            Some(Value::StringValue("native".into()))
        );
        let mapping = &d.mapping_table[loc.mapping_index as usize];
        assert_eq!(s(mapping.filename_strindex), "/bin/app");
        assert_eq!(
            attr(d, mapping.attribute_indices[0]),
            (
                "process.executable.build_id.gnu".into(),
                Some(Value::StringValue("abcd".into()))
            )
        );
    }

    #[test]
    fn go_samples_carry_goroutine_attributes_and_trace_links() {
        use crate::{golang::samples::LabelSet, profile::GoState};
        let mut p = example();
        let set = LabelSet {
            labels: vec![
                ("handler".into(), "/checkout".into()),
                ("thread.id".into(), "clash".into()),
                ("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into()),
                ("span_id".into(), "00f067aa0ba902b7".into()),
            ],
            truncated: true,
        };
        p.samples[0].go = Some(GoState {
            goid: 77,
            state: "waiting",
            wait_reason: Some("chan receive".into()),
            system_stack: false,
            labels: Some(std::sync::Arc::new(set)),
            labels_unknown: false,
        });
        let req = to_request(&p, &settings(), [3; 16]);
        let d = req.dictionary.as_ref().unwrap();
        let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let go = prof
            .samples
            .iter()
            .find(|s| s.link_index != 0)
            .expect("a sample with a link");
        let attrs: HashMap<_, _> = go.attribute_indices.iter().map(|&i| attr(d, i)).collect();
        assert_eq!(attrs["go.goroutine.id"], Some(Value::IntValue(77)));
        assert_eq!(
            attrs["go.goroutine.state"],
            Some(Value::StringValue("waiting".into()))
        );
        assert_eq!(
            attrs["go.goroutine.wait_reason"],
            Some(Value::StringValue("chan receive".into()))
        );
        assert_eq!(
            attrs["handler"],
            Some(Value::StringValue("/checkout".into()))
        );
        assert_eq!(
            attrs["go.labels.truncated"],
            Some(Value::StringValue("true".into()))
        );
        // A label may not shadow an attribute of the sample.
        assert_eq!(attrs["thread.id"], Some(Value::IntValue(100)));
        let link = &d.link_table[go.link_index as usize];
        assert_eq!(link.trace_id[..2], [0x4b, 0xf9]);
        assert_eq!(link.span_id.len(), 8);
        // The other sample has no link.
        assert!(prof.samples.iter().any(|s| s.link_index == 0));
    }

    #[test]
    fn trace_links_need_well_formed_ids() {
        use crate::golang::samples::LabelSet;
        let set = |pairs: &[(&str, &str)]| LabelSet {
            labels: pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            truncated: false,
        };
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(
            trace_link(&set(&[
                ("otel.trace_id", trace),
                ("otel.span_id", "00f067aa0ba902b7")
            ]))
            .is_some()
        );
        assert!(trace_link(&set(&[("trace_id", trace)])).is_none());
        assert!(
            trace_link(&set(&[
                ("trace_id", "xyz"),
                ("span_id", "00f067aa0ba902b7")
            ]))
            .is_none()
        );
        assert!(
            trace_link(&set(&[
                ("trace_id", &"0".repeat(32)),
                ("span_id", "00f067aa0ba902b7")
            ]))
            .is_none()
        );
    }

    #[test]
    fn equal_samples_are_merged_and_service_name_env_wins() {
        let mut p = example();
        // A duplicate identity (same stack, thread, name, cpu) split in two.
        let mut dup = p.samples[0].clone();
        dup.times_ns = [10, 11].into_iter().collect();
        dup.count = 2;
        p.samples.push(dup);
        let mut res = settings();
        res.service_name = Some("checkout".into());
        res.attributes
            .push(("service.name".into(), "ignored".into()));
        let req = to_request(&p, &res, [1; 16]);
        let prof = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(prof.samples.len(), 2);
        let merged = prof
            .samples
            .iter()
            .find(|s| s.timestamps_unix_nano.len() == 5)
            .expect("merged sample");
        assert!(merged.timestamps_unix_nano.windows(2).all(|w| w[0] <= w[1]));
        let service = req.resource_profiles[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|a| a.key == "service.name")
            .unwrap();
        assert_eq!(
            service.value.clone().unwrap().value,
            Some(Value::StringValue("checkout".into()))
        );
    }
}
