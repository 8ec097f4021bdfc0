//! The results: one markdown table per (rate, workload) with every
//! profiler's figures and each peer's ratio to ours, the baselines, where
//! ours stands against the team's targets, the micro-benchmarks, and the
//! same data as JSON.

use std::fmt::Write;

use super::{
    json::Value,
    micro::Estimate,
    run::{Baseline, Outcome, Status},
    tools::Tool,
    workload::Workload,
};

/// Everything a report is made of.
pub struct Results {
    pub title: String,
    /// (label, value) lines about the machine and the run.
    pub context: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub rates: Vec<u32>,
    pub workloads: Vec<Workload>,
    pub baselines: Vec<Baseline>,
    pub outcomes: Vec<Outcome>,
    pub micro: Option<Result<Vec<Estimate>, String>>,
    pub micro_foreign_pct: Option<f64>,
    pub complete: bool,
    /// Foreign CPU (% of one CPU) above which a window counts as contended.
    pub contended_pct: f64,
}

/// Derived per-run figures.
struct Figures {
    user_pct: f64,
    user_us: Option<f64>,
    bpf_pct: Option<f64>,
    bpf_us: Option<f64>,
    /// user + BPF in the window, ns.
    total_ns: f64,
    total_us: Option<f64>,
    rss_mean_mib: f64,
    rss_peak_mib: f64,
    map_mib: Option<f64>,
    coverage: Option<f64>,
    slowdown_pct: Option<f64>,
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn stdev(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt()
}

impl Results {
    /// The baselines of `w` the slowdowns are computed against: the
    /// uncontended ones, or all when none is.
    fn baselines_of(&self, w: Workload) -> Vec<&Baseline> {
        let all: Vec<&Baseline> = self.baselines.iter().filter(|b| b.workload == w).collect();
        let clean: Vec<&Baseline> = all
            .iter()
            .copied()
            .filter(|b| b.foreign_pct <= self.contended_pct)
            .collect();
        if clean.is_empty() { all } else { clean }
    }

    fn baseline_mean(&self, w: Workload) -> Option<f64> {
        let v: Vec<f64> = self.baselines_of(w).iter().map(|b| b.throughput).collect();
        (!v.is_empty()).then(|| mean(&v))
    }

    fn figures(&self, o: &Outcome) -> Figures {
        let bpf_ns = if o.tool.uses_bpf() {
            Some(o.bpf.run_time_ns as f64 * o.window_s / o.bpf_interval_s)
        } else {
            None
        };
        let per = |ns: f64| o.delivered.filter(|d| *d > 0.0).map(|d| ns / 1000.0 / d);
        let total_ns = o.user_cpu_ns as f64 + bpf_ns.unwrap_or(0.0);
        Figures {
            user_pct: o.user_cpu_ns as f64 / 1e9 / o.window_s * 100.0,
            user_us: per(o.user_cpu_ns as f64),
            bpf_pct: bpf_ns.map(|n| n / 1e9 / o.window_s * 100.0),
            bpf_us: bpf_ns.and_then(per),
            total_ns,
            total_us: per(total_ns),
            rss_mean_mib: mib(o.rss_mean_kib),
            rss_peak_mib: mib(o.rss_peak_life_kib as f64),
            map_mib: o
                .tool
                .uses_bpf()
                .then(|| o.map_bytes as f64 / (1 << 20) as f64),
            coverage: o.delivered.map(|d| d / o.expected_for_tool()),
            slowdown_pct: match (o.throughput, self.baseline_mean(o.workload)) {
                (Some(t), Some(b)) if b > 0.0 => Some((1.0 - t / b) * 100.0),
                _ => None,
            },
        }
    }

    fn ours(&self, rate: u32, w: Workload) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| {
            o.tool == Tool::Ours && o.rate == rate && o.workload == w && o.status == Status::Ok
        })
    }

    fn find(&self, tool: Tool, rate: u32, w: Workload) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.tool == tool && o.rate == rate && o.workload == w && o.status == Status::Ok)
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}\n", self.title);
        if !self.complete {
            s.push_str("**Incomplete: the run was interrupted or failed; the tables hold what finished.**\n\n");
        }
        for (k, v) in &self.context {
            let _ = writeln!(s, "- {k}: {v}");
        }
        s.push_str("\n| component | version |\n| --- | --- |\n");
        for (k, v) in &self.versions {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        self.baselines_md(&mut s);
        for &rate in &self.rates {
            for &w in &self.workloads {
                self.table_md(&mut s, rate, w);
            }
        }
        self.targets_md(&mut s);
        self.micro_md(&mut s);
        s
    }

    fn baselines_md(&self, s: &mut String) {
        if self.baselines.is_empty() {
            return;
        }
        s.push_str("\n## Baselines: each workload alone\n\n");
        let _ = write!(
            s,
            "Slowdowns below are against the mean of the windows where other processes used at most \
             {}% of a CPU (all windows if none did).\n\n",
            self.contended_pct
        );
        s.push_str("| workload | unit | windows used / taken | mean (units/s) | min – max | stdev | foreign CPU (max) |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for &w in &self.workloads {
            let taken = self.baselines.iter().filter(|b| b.workload == w).count();
            let b = self.baselines_of(w);
            if b.is_empty() {
                continue;
            }
            let v: Vec<f64> = b.iter().map(|b| b.throughput).collect();
            let m = mean(&v);
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let foreign = b.iter().map(|b| b.foreign_pct).fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "| {} | {} | {} / {taken} | {} | {} – {} ({:+.2}% / {:+.2}%) | {:.2}% | {:.1}% of a CPU |",
                w.name(),
                w.unit(),
                v.len(),
                thousands(m),
                thousands(lo),
                thousands(hi),
                (lo / m - 1.0) * 100.0,
                (hi / m - 1.0) * 100.0,
                stdev(&v) / m * 100.0,
                foreign
            );
        }
    }

    fn table_md(&self, s: &mut String, rate: u32, w: Workload) {
        let rows: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.rate == rate && o.workload == w)
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n## {rate} Hz, workload `{}`\n", w.name());
        s.push_str(
            "| profiler | user CPU (% of 1 CPU) | user µs/sample | BPF (% of 1 CPU) | BPF µs/sample | \
             total µs/sample | RSS mean (MiB) | RSS peak (MiB) | BPF maps (MiB) | delivered / expected | \
             lost | start-up (s) | workload slowdown |\n",
        );
        s.push_str(
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let ours = self.ours(rate, w).map(|o| (o, self.figures(o)));
        let mut notes = Vec::new();
        for o in &rows {
            match &o.status {
                Status::Missing(why) => {
                    let _ = writeln!(
                        s,
                        "| {} | missing: {why} | | | | | | | | | | | |",
                        o.tool.label()
                    );
                    continue;
                }
                Status::Failed(why) => {
                    let _ = writeln!(
                        s,
                        "| {} | failed: {} | | | | | | | | | | | |",
                        o.tool.label(),
                        why.replace('|', "/")
                    );
                    continue;
                }
                Status::Ok => {}
            }
            let f = self.figures(o);
            let is_ours = o.tool == Tool::Ours;
            let ratio = |mine: Option<f64>, theirs: Option<f64>| -> String {
                match (is_ours, mine, theirs) {
                    (false, Some(m), Some(t)) if t > 0.0 => format!(" (×{:.2})", m / t),
                    _ => String::new(),
                }
            };
            let o_f = ours.as_ref().map(|(_, f)| f);
            let o_o = ours.as_ref().map(|(o, _)| *o);
            let cell = |v: Option<f64>, digits: usize, theirs: Option<f64>| match v {
                Some(x) => format!("{x:.digits$}{}", ratio(Some(x), theirs)),
                None => "–".into(),
            };
            let invalid = if o.invalid.is_empty() { "" } else { " ⚠" };
            let _ = writeln!(
                s,
                "| {}{invalid} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.tool.label(),
                cell(Some(f.user_pct), 3, o_f.map(|x| x.user_pct)),
                cell(f.user_us, 2, o_f.and_then(|x| x.user_us)),
                cell(f.bpf_pct, 3, o_f.and_then(|x| x.bpf_pct)),
                cell(f.bpf_us, 2, o_f.and_then(|x| x.bpf_us)),
                cell(f.total_us, 2, o_f.and_then(|x| x.total_us)),
                cell(Some(f.rss_mean_mib), 1, o_f.map(|x| x.rss_mean_mib)),
                cell(Some(f.rss_peak_mib), 1, o_f.map(|x| x.rss_peak_mib)),
                cell(f.map_mib, 2, o_f.and_then(|x| x.map_mib)),
                match (o.delivered, f.coverage) {
                    (Some(d), Some(c)) => format!(
                        "{} / {} ({:.1}%)",
                        thousands(d),
                        thousands(o.expected_for_tool()),
                        c * 100.0
                    ),
                    _ => "–".into(),
                },
                o.lost.map_or("n/a".into(), |l| l.to_string()),
                cell(o.startup_s, 2, o_o.and_then(|x| x.startup_s)),
                f.slowdown_pct.map_or("–".into(), |p| format!("{p:+.2}%")),
            );
            let mut n = Vec::new();
            n.extend(o.invalid.iter().map(|i| format!("⚠ {i}")));
            if o.attempts > 1 {
                n.push(format!(
                    "attempt {} (earlier ones were contended)",
                    o.attempts
                ));
            }
            if let Some(t) = o.first_output_s {
                n.push(format!("first output with samples after {t:.1} s"));
            }
            let top = o.rss_top_sample;
            if top.rss > 0 {
                n.push(format!(
                    "highest RSS sample {:.1} MiB = {:.1} anon + {:.1} file-backed",
                    mib(top.rss as f64),
                    mib(top.anon as f64),
                    mib(top.file as f64)
                ));
            }
            if let Some(sd) = o.shutdown_s {
                n.push(format!("stop: {} in {sd:.1} s", o.stop_note));
            }
            n.push(format!(
                "whole-life CPU {:.2} s; window {:.1} s; load {:.2} → {:.2}; foreign CPU {:.1}% of a CPU; non-idle {:.1}%",
                o.life_cpu_ns as f64 / 1e9,
                o.window_s,
                o.load_start[0],
                o.load_end[0],
                o.foreign_pct,
                o.busy_fraction * 100.0
            ));
            if o.tool.uses_bpf() {
                n.push(format!(
                    "{} BPF runs ({} sampler runs) of {}",
                    o.bpf.run_cnt,
                    o.bpf.sampler_run_cnt,
                    compact_progs(&o.bpf_progs)
                ));
            }
            if let Some(sink) = o.sink_cpu_ns {
                n.push(format!(
                    "OTLP receiver (not counted above): {:.2}% of a CPU",
                    sink as f64 / 1e9 / o.window_s * 100.0
                ));
            }
            if !o.lost_detail.is_empty() {
                n.push(format!("lost: {}", o.lost_detail));
            }
            n.extend(o.notes.iter().cloned());
            notes.push(format!("- **{}**: {}", o.tool.label(), n.join("; ")));
        }
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }

    fn targets_md(&self, s: &mut String) {
        s.push_str("\n## Where ours stands against the targets\n\n");
        s.push_str("| target | measured | verdict |\n| --- | --- | --- |\n");
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        let all = |v: &[bool]| (!v.is_empty()).then(|| v.iter().all(|x| *x));
        let hi = 999;

        // Total cost vs otel at 999 Hz.
        let mut m = Vec::new();
        let mut ok = Vec::new();
        for &w in &self.workloads {
            if let (Some(o), Some(p)) = (self.ours(hi, w), self.find(Tool::Otel, hi, w)) {
                let r = self.figures(o).total_ns / self.figures(p).total_ns;
                m.push(format!("{}: {:.2}", w.name(), r));
                ok.push(r <= 1.0 / 3.0);
            }
        }
        let _ = writeln!(
            s,
            "| total cost (user + BPF) at 999 Hz ≤ 1/3 of opentelemetry-ebpf-profiler's | ours/otel = {} | {} |",
            none_if_empty(&m),
            verdict(all(&ok))
        );

        // µs per sample, cpu workload at 999 Hz.
        let o = self.ours(hi, Workload::Cpu).map(|o| self.figures(o));
        let us = o.as_ref().and_then(|f| f.total_us);
        let _ = writeln!(
            s,
            "| ≤ 3 µs per sample end to end (999 Hz, frame pointers, 30 frames: workload `cpu`) | {} | {} |",
            us.map_or("–".into(), |u| format!(
                "{u:.2} µs (user {:.2} + BPF {:.2})",
                o.as_ref().and_then(|f| f.user_us).unwrap_or(f64::NAN),
                o.as_ref().and_then(|f| f.bpf_us).unwrap_or(f64::NAN)
            )),
            verdict(us.map(|u| u <= 3.0))
        );

        // User CPU below perf's.
        let mut m = Vec::new();
        let mut ok = Vec::new();
        for &rate in &self.rates {
            for &w in &self.workloads {
                if let (Some(o), Some(p)) = (self.ours(rate, w), self.find(Tool::Perf, rate, w)) {
                    let (a, b) = (self.figures(o).user_pct, self.figures(p).user_pct);
                    m.push(format!("{rate} Hz {}: {a:.3}% vs {b:.3}%", w.name()));
                    ok.push(a < b);
                }
            }
        }
        let _ = writeln!(
            s,
            "| user-space CPU below `perf record -a -g` (ours vs perf, % of one CPU) | {} | {} |",
            none_if_empty(&m),
            verdict(all(&ok))
        );

        // Peak RSS.
        let mut m = Vec::new();
        let mut ok = Vec::new();
        for &w in &self.workloads {
            if let (Some(o), Some(p)) = (self.ours(hi, w), self.find(Tool::Otel, hi, w)) {
                let (a, b) = (self.figures(o).rss_peak_mib, self.figures(p).rss_peak_mib);
                m.push(format!(
                    "{}: {a:.1} vs {b:.1} MiB (×{:.2})",
                    w.name(),
                    a / b
                ));
                ok.push(a <= b / 4.0);
            }
        }
        let _ = writeln!(
            s,
            "| peak RSS ≤ 1/4 of opentelemetry-ebpf-profiler's at 999 Hz | {} | {} |",
            none_if_empty(&m),
            verdict(all(&ok))
        );
        let mut m = Vec::new();
        let mut ok = Vec::new();
        for &rate in self.rates.iter().filter(|r| **r != hi) {
            for &w in &self.workloads {
                if let Some(o) = self.ours(rate, w) {
                    let a = self.figures(o).rss_peak_mib;
                    m.push(format!("{rate} Hz {}: {a:.1} MiB", w.name()));
                    ok.push(a <= 32.0);
                }
            }
        }
        let _ = writeln!(
            s,
            "| peak RSS ≤ 32 MiB at 19 and 99 Hz | {} | {} |",
            none_if_empty(&m),
            verdict(all(&ok))
        );

        // Start-up.
        let starts: Vec<f64> = self
            .outcomes
            .iter()
            .filter(|o| o.tool == Tool::Ours && o.status == Status::Ok)
            .filter_map(|o| o.startup_s)
            .collect();
        let worst = starts.iter().copied().fold(f64::NAN, f64::max);
        let _ = writeln!(
            s,
            "| start-up to first sample ≤ 0.5 s | {} | {} |",
            if starts.is_empty() {
                "–".into()
            } else {
                format!(
                    "{:.2}–{worst:.2} s over {} runs",
                    starts.iter().copied().fold(f64::MAX, f64::min),
                    starts.len()
                )
            },
            verdict((!starts.is_empty()).then_some(worst <= 0.5))
        );

        // Lost at 999 Hz.
        let mut m = Vec::new();
        let mut ok = Vec::new();
        for &w in &self.workloads {
            if let Some(o) = self.ours(hi, w) {
                let cov = self
                    .figures(o)
                    .coverage
                    .map_or("–".into(), |c| format!("{:.1}%", c * 100.0));
                match o.lost {
                    Some(l) => {
                        m.push(format!(
                            "{}: {l} lost, delivered {cov} of expected",
                            w.name()
                        ));
                        ok.push(l == 0);
                    }
                    None => m.push(format!("{}: no loss count", w.name())),
                }
            }
        }
        let _ = writeln!(
            s,
            "| 0 samples lost at 999 Hz | {} | {} |",
            none_if_empty(&m),
            verdict(all(&ok))
        );

        // Symbolizer.
        let lookups = match &self.micro {
            Some(Ok(v)) => v
                .iter()
                .find(|e| e.id == "symbolize/cached_lookup")
                .and_then(Estimate::per_second),
            _ => None,
        };
        let _ = writeln!(
            s,
            "| symbolizer ≥ 5 M cached lookups/s | {} | {} |",
            lookups.map_or("–".into(), |l| format!("{:.1} M/s", l / 1e6)),
            verdict(lookups.map(|l| l >= 5e6))
        );
    }

    fn micro_md(&self, s: &mut String) {
        let Some(micro) = &self.micro else {
            return;
        };
        s.push_str("\n## Micro-benchmarks (criterion, `cargo bench -p profiler`)\n\n");
        if let Some(f) = self.micro_foreign_pct {
            let _ = writeln!(s, "Other processes used {f:.1}% of a CPU while they ran.\n");
        }
        match micro {
            Err(e) => {
                let _ = writeln!(s, "Failed: {e}");
            }
            Ok(v) => {
                s.push_str("| benchmark | time per iteration (mean, 95% CI) | elements per iteration | throughput |\n| --- | --- | --- | --- |\n");
                for e in v {
                    let _ = writeln!(
                        s,
                        "| {} | {} ({} – {}) | {} | {} |",
                        e.id,
                        duration(e.mean_ns),
                        duration(e.low_ns),
                        duration(e.high_ns),
                        e.elements.map_or("–".into(), |n| n.to_string()),
                        e.per_second().map_or("–".into(), |p| format!(
                            "{}/s ({:.1} ns each)",
                            si(p),
                            1e9 / p
                        ))
                    );
                }
            }
        }
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let pairs = |v: &[(String, String)]| {
            Value::obj(v.iter().map(|(k, x)| (k.clone(), Value::from(x.as_str()))))
        };
        Value::obj([
            ("title", Value::from(self.title.as_str())),
            ("complete", self.complete.into()),
            ("context", pairs(&self.context)),
            ("versions", pairs(&self.versions)),
            (
                "baselines",
                Value::Arr(
                    self.baselines
                        .iter()
                        .map(|b| {
                            Value::obj([
                                ("workload", b.workload.name().into()),
                                ("throughput_per_s", b.throughput.into()),
                                ("foreign_cpu_pct", b.foreign_pct.into()),
                                ("attempts", b.attempts.into()),
                                ("idle_before_pct", b.idle.foreign_pct.into()),
                                ("loadavg_1m", b.load[0].into()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "runs",
                Value::Arr(self.outcomes.iter().map(|o| self.outcome_json(o)).collect()),
            ),
            (
                "micro",
                match &self.micro {
                    None => Value::Null,
                    Some(Err(e)) => Value::obj([("error", Value::from(e.as_str()))]),
                    Some(Ok(v)) => Value::Arr(
                        v.iter()
                            .map(|e| {
                                Value::obj([
                                    ("id", e.id.as_str().into()),
                                    ("mean_ns", e.mean_ns.into()),
                                    ("ci_low_ns", e.low_ns.into()),
                                    ("ci_high_ns", e.high_ns.into()),
                                    ("elements", e.elements.into()),
                                    ("elements_per_s", e.per_second().into()),
                                ])
                            })
                            .collect(),
                    ),
                },
            ),
        ])
    }

    fn outcome_json(&self, o: &Outcome) -> Value {
        let f = self.figures(o);
        let (status, reason) = match &o.status {
            Status::Ok => ("ok", None),
            Status::Missing(r) => ("missing", Some(r.clone())),
            Status::Failed(r) => ("failed", Some(r.clone())),
        };
        Value::obj([
            ("tool", o.tool.name().into()),
            ("workload", o.workload.name().into()),
            ("rate_hz", o.rate.into()),
            ("status", status.into()),
            ("reason", reason.into()),
            ("command", o.command.as_str().into()),
            ("window_s", o.window_s.into()),
            ("user_cpu_ns", o.user_cpu_ns.into()),
            ("user_cpu_pct", f.user_pct.into()),
            ("user_us_per_sample", f.user_us.into()),
            ("life_cpu_ns", o.life_cpu_ns.into()),
            ("bpf_run_time_ns", o.bpf.run_time_ns.into()),
            ("bpf_run_cnt", o.bpf.run_cnt.into()),
            ("bpf_sampler_run_cnt", o.bpf.sampler_run_cnt.into()),
            ("bpf_interval_s", o.bpf_interval_s.into()),
            ("bpf_pct", f.bpf_pct.into()),
            ("bpf_us_per_sample", f.bpf_us.into()),
            ("total_us_per_sample", f.total_us.into()),
            ("bpf_programs", o.bpf_progs.clone().into()),
            ("bpf_maps", (o.maps as u64).into()),
            ("bpf_map_bytes", o.map_bytes.into()),
            ("rss_mean_kib", o.rss_mean_kib.into()),
            ("rss_peak_window_kib", o.rss_peak_window_kib.into()),
            ("rss_peak_life_kib", o.rss_peak_life_kib.into()),
            ("rss_top_sample_kib", o.rss_top_sample.rss.into()),
            ("rss_top_sample_anon_kib", o.rss_top_sample.anon.into()),
            ("rss_top_sample_file_kib", o.rss_top_sample.file.into()),
            ("delivered", o.delivered.into()),
            ("expected_all", o.expected.into()),
            ("expected_for_tool", o.expected_for_tool().into()),
            ("non_idle_fraction", o.busy_fraction.into()),
            ("coverage", f.coverage.into()),
            ("lost", o.lost.into()),
            ("lost_detail", o.lost_detail.as_str().into()),
            ("startup_s", o.startup_s.into()),
            ("first_output_s", o.first_output_s.into()),
            ("throughput_per_s", o.throughput.into()),
            ("slowdown_pct", f.slowdown_pct.into()),
            ("sink_cpu_ns", o.sink_cpu_ns.into()),
            ("foreign_cpu_pct", o.foreign_pct.into()),
            ("foreign_top", o.foreign_top.clone().into()),
            ("foreign_life_cpu_pct", o.foreign_life_pct.into()),
            (
                "idle_before_pct",
                o.idle.as_ref().map(|i| i.foreign_pct).into(),
            ),
            ("idle_waited_s", o.idle.as_ref().map(|i| i.waited_s).into()),
            ("loadavg_start", o.load_start.to_vec().into()),
            ("loadavg_end", o.load_end.to_vec().into()),
            ("shutdown_s", o.shutdown_s.into()),
            ("stop", o.stop_note.as_str().into()),
            ("notes", o.notes.clone().into()),
            ("attempts", o.attempts.into()),
            ("invalid", o.invalid.clone().into()),
        ])
    }
}

fn none_if_empty(v: &[String]) -> String {
    if v.is_empty() {
        "–".into()
    } else {
        v.join("; ")
    }
}

/// "perf_event:sample_cpu ×1, tracing:on_exec ×1".
fn compact_progs(progs: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for p in progs {
        match counts.iter_mut().find(|(n, _)| n == p) {
            Some((_, c)) => *c += 1,
            None => counts.push((p.clone(), 1)),
        }
    }
    if counts.len() > 6 {
        return format!("{} programs", progs.len());
    }
    counts
        .iter()
        .map(|(n, c)| {
            if *c > 1 {
                format!("{n} ×{c}")
            } else {
                n.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

fn duration(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(si(5.2e6), "5.20 M");
        assert_eq!(duration(1500.0), "1.50 µs");
    }
}
