//! Helpers for the integration tests in `tests/`: finding the profiler
//! binary, compiling fixture programs, running the profiler and perf, and
//! reading pprof files with an independent decoder (the `pprof` crate's
//! generated types, not the profiler's own).

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use pprof::protos::Message;

mod go_toolchains;
pub mod otlp;
pub use pprof::protos::Profile;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The profiler binary under test: `$PROFILER_BIN`, else the newest build.
pub fn profiler_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROFILER_BIN") {
        // Relative paths are taken from the workspace root.
        return workspace().join(p);
    }
    ["release", "debug"]
        .iter()
        .map(|p| workspace().join("target").join(p).join("profiler"))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("no profiler binary: run `cargo xtask build --release` or `cargo xtask test`")
}

fn required() -> bool {
    std::env::var_os("PROFILER_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1")
}

/// Whether the test can run; when it cannot, fails under `cargo xtask test`
/// and prints why (and skips) under a plain `cargo test`.
pub fn can_run(test: &str, needs: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_owned());
    }
    for tool in needs {
        if *tool == "otlp-python" {
            if !otlp::python().exists() {
                missing.push(format!(
                    "the OTLP receiver venv ({})",
                    otlp::python().display()
                ));
            }
            continue;
        }
        let ok = Command::new(tool)
            .arg(if matches!(*tool, "go" | "openssl") {
                "version"
            } else {
                "--version"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!("`{tool}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: needs {}", missing.join(", "));
    assert!(!required(), "{msg} (PROFILER_REQUIRE_ROOT_TESTS=1)");
    eprintln!("SKIPPED {msg}");
    false
}

/// The official Go toolchains installed by `cargo xtask go-toolchains`, as
/// (version, `go` binary), oldest first.
pub fn go_toolchains() -> Vec<(String, PathBuf)> {
    let dir = std::env::var_os("PROFILER_GO_TOOLCHAINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/go-toolchains"));
    go_toolchains::discover(&dir)
}

/// A directory of compiled fixtures.
pub struct Fixtures {
    dir: tempfile::TempDir,
}

impl Default for Fixtures {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixtures {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("profiler-fixtures")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn source(name: &str) -> PathBuf {
        workspace().join("tests/fixtures").join(name)
    }

    /// Runs `compiler FLAGS -o DIR/NAME SOURCE` and returns DIR/NAME.
    fn compile(&self, compiler: &str, flags: &[&str], source: PathBuf, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        let st = Command::new(compiler)
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(source)
            .status()
            .unwrap_or_else(|e| panic!("{compiler} does not run: {e}"));
        assert!(st.success(), "{compiler} failed for {name}");
        out
    }

    /// Compiles `tests/fixtures/NAME.c` with frame pointers (leaf ones too).
    pub fn c(&self, name: &str) -> PathBuf {
        let flags = [
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ];
        self.compile("gcc", &flags, Self::source(&format!("{name}.c")), name)
    }

    /// Compiles `tests/fixtures/NAME.c` (C) or `NAME.cc` (C++) optimized
    /// and without frame pointers, with DWARF.
    pub fn c_no_frame_pointers(&self, name: &str) -> PathBuf {
        let (compiler, src) = match Self::source(&format!("{name}.cc")) {
            cc if cc.exists() => ("g++", cc),
            _ => ("gcc", Self::source(&format!("{name}.c"))),
        };
        self.compile(compiler, &["-O2", "-g", "-fomit-frame-pointer"], src, name)
    }

    /// Compiles `tests/fixtures/NAME.rs` as a default `cargo build
    /// --release` does: opt-level 3, no frame pointers, debug info
    /// stripped, the symbol table kept.
    pub fn rust_release(&self, name: &str) -> PathBuf {
        let flags = [
            "-C",
            "opt-level=3",
            "-C",
            "force-frame-pointers=no",
            "-C",
            "strip=debuginfo",
            "--edition",
            "2021",
        ];
        self.compile("rustc", &flags, Self::source(&format!("{name}.rs")), name)
    }

    /// Builds the Go fixture package `tests/fixtures/NAME` with `go` and
    /// `flags` (and `cgo` on or off) into `OUT`.
    pub fn go(&self, go: &Path, name: &str, out: &str, cgo: bool, flags: &[&str]) -> PathBuf {
        let bin = self.dir.path().join(out);
        let cache = workspace().join("target/go-fixture-cache");
        let st = Command::new(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&bin)
            .arg(".")
            .current_dir(Self::source(name))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", if cgo { "1" } else { "0" })
            .env("GOCACHE", cache.join("build"))
            .env("GOPATH", cache.join("gopath"))
            .status()
            .expect("go runs");
        assert!(st.success(), "go build {out} failed");
        bin
    }

    /// Compiles `tests/fixtures/NAME.rs` with optimisations, debug info and
    /// frame pointers.
    pub fn rust(&self, name: &str) -> PathBuf {
        let flags = [
            "-O",
            "-g",
            "-C",
            "force-frame-pointers=yes",
            "--edition",
            "2021",
        ];
        self.compile("rustc", &flags, Self::source(&format!("{name}.rs")), name)
    }
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().expect("spawn"))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `limit` for exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on a child we own.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the profiler to completion with `args`.
pub fn profiler(args: &[&str]) -> Output {
    Command::new(profiler_bin())
        .args(args)
        .output()
        .expect("profiler runs")
}

/// `profiler record` of `pid` at `hz` for `secs` into `out`; fails the test
/// unless it succeeds.
pub fn record_pid(pid: u32, hz: u32, secs: u32, out: &Path) -> Output {
    let (pid, hz, secs) = (pid.to_string(), hz.to_string(), secs.to_string());
    let run = profiler(&[
        "record",
        "--pid",
        &pid,
        "--frequency",
        &hz,
        "--duration",
        &secs,
        "-o",
        out.to_str().expect("UTF-8 path"),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}

/// Starts the profiler with `args`, its output captured.
pub fn profiler_spawn(args: &[&str]) -> Running {
    Running::spawn(
        Command::new(profiler_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Waits for a spawned profiler and returns its output.
pub fn finish(run: Running, limit: Duration) -> Output {
    let mut run = run;
    assert!(
        run.wait_for(limit).is_some(),
        "profiler did not stop within {limit:?}"
    );
    let Running(child) = &mut run;
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// A decoded pprof profile with lookup helpers.
pub struct Pprof {
    pub p: Profile,
}

impl Pprof {
    /// Reads a gzipped pprof file.
    pub fn read(path: &Path) -> Self {
        let gz = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gzip");
        Self {
            p: Profile::decode(raw.as_slice()).expect("profile.proto"),
        }
    }

    pub fn str(&self, i: i64) -> &str {
        &self.p.string_table[i as usize]
    }

    fn location(&self, id: u64) -> &pprof::protos::Location {
        &self.p.location[id as usize - 1]
    }

    fn function(&self, id: u64) -> &pprof::protos::Function {
        &self.p.function[id as usize - 1]
    }

    /// Mapping file name of a location.
    pub fn mapping_name(&self, location_id: u64) -> &str {
        let l = self.location(location_id);
        if l.mapping_id == 0 {
            return "";
        }
        self.str(self.p.mapping[l.mapping_id as usize - 1].filename)
    }

    /// (function, file, line) of each line of a location, innermost first.
    pub fn lines(&self, location_id: u64) -> Vec<(String, String, i64)> {
        self.location(location_id)
            .line
            .iter()
            .map(|l| {
                let f = self.function(l.function_id);
                (
                    self.str(f.name).to_owned(),
                    self.str(f.filename).to_owned(),
                    l.line,
                )
            })
            .collect()
    }

    /// Every function name on a sample's stack.
    pub fn stack_functions(&self, s: &pprof::protos::Sample) -> Vec<String> {
        s.location_id
            .iter()
            .flat_map(|&id| self.lines(id).into_iter().map(|(f, _, _)| f))
            .collect()
    }

    /// The symbol a sample's leaf address is in (the outermost function of
    /// the leaf location, as perf names it), or "[kernel]" for kernel leaves.
    pub fn leaf_symbol(&self, s: &pprof::protos::Sample) -> String {
        let Some(&leaf) = s.location_id.first() else {
            return String::new();
        };
        if self.mapping_name(leaf) == "[kernel.kallsyms]" {
            return "[kernel]".into();
        }
        self.lines(leaf)
            .last()
            .map(|l| l.0.clone())
            .unwrap_or_default()
    }

    /// The user part of a sample's stack, innermost first: per location
    /// the function its address is in (the outermost of its inline
    /// frames), as a symbol table names it; marks of incomplete stacks
    /// (`[truncated]`, `[unwind: ...]`) included; kernel frames left out.
    pub fn user_symbols(&self, s: &pprof::protos::Sample) -> Vec<String> {
        s.location_id
            .iter()
            .filter(|&&l| self.mapping_name(l) != "[kernel.kallsyms]")
            .map(|&l| {
                self.lines(l)
                    .last()
                    .map(|x| x.0.clone())
                    .unwrap_or_else(|| "[unknown]".into())
            })
            .collect()
    }

    /// A sample's user frames as `name (mapping @ address)`, for messages.
    pub fn user_frames_described(&self, s: &pprof::protos::Sample) -> Vec<String> {
        s.location_id
            .iter()
            .filter(|&&l| self.mapping_name(l) != "[kernel.kallsyms]")
            .map(|&l| {
                let name = self.lines(l).last().map(|x| x.0.clone());
                format!(
                    "{} ({} @ {:#x})",
                    name.as_deref().unwrap_or("[unknown]"),
                    self.mapping_name(l),
                    self.location(l).address
                )
            })
            .collect()
    }

    /// A numeric label of a sample.
    pub fn label_num(&self, s: &pprof::protos::Sample, key: &str) -> Option<i64> {
        s.label
            .iter()
            .find(|l| self.str(l.key) == key)
            .map(|l| l.num)
    }

    /// A string label of a sample.
    pub fn label_str(&self, s: &pprof::protos::Sample, key: &str) -> Option<String> {
        s.label
            .iter()
            .find(|l| self.str(l.key) == key)
            .map(|l| self.str(l.str).to_owned())
    }

    /// Checks that every mapping's has_* flags say exactly what its
    /// locations carry: functions on all of them, file names on all lines,
    /// line numbers on all lines; inline frames only where lines are known.
    pub fn assert_mapping_flags_truthful(&self) {
        for (i, m) in self.p.mapping.iter().enumerate() {
            let locs: Vec<_> = self
                .p
                .location
                .iter()
                .filter(|l| l.mapping_id == i as u64 + 1)
                .collect();
            let funcs = locs.iter().all(|l| !l.line.is_empty());
            let files = funcs
                && locs.iter().all(|l| {
                    l.line
                        .iter()
                        .all(|x| !self.str(self.function(x.function_id).filename).is_empty())
                });
            let lines = funcs && locs.iter().all(|l| l.line.iter().all(|x| x.line > 0));
            let name = self.str(m.filename);
            assert_eq!(m.has_functions, funcs, "{name}: has_functions");
            assert_eq!(m.has_filenames, files, "{name}: has_filenames");
            assert_eq!(m.has_line_numbers, lines, "{name}: has_line_numbers");
            assert!(
                !m.has_inline_frames || lines,
                "{name}: has_inline_frames without lines"
            );
        }
    }

    /// Sample count (first value) of a sample.
    pub fn count(s: &pprof::protos::Sample) -> i64 {
        s.value[0]
    }

    /// Total samples.
    pub fn total(&self) -> i64 {
        self.p.sample.iter().map(Self::count).sum()
    }

    /// Flat share (0..1) of each leaf symbol.
    pub fn flat_shares(&self) -> HashMap<String, f64> {
        let total = self.total().max(1) as f64;
        let mut out: HashMap<String, f64> = HashMap::new();
        for s in &self.p.sample {
            *out.entry(self.leaf_symbol(s)).or_default() += Self::count(s) as f64 / total;
        }
        out
    }
}

/// Flat (self) shares by symbol from `perf report`, kernel symbols summed
/// under "[kernel]".
pub fn perf_flat_shares(data: &Path) -> HashMap<String, f64> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "sym",
            "-q",
            "-g",
            "none",
        ])
        .args(["--percent-limit", "0", "-i"])
        .arg(data)
        .output()
        .expect("perf report runs");
    assert!(
        out.status.success(),
        "perf report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shares: HashMap<String, f64> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(pct), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(pct) = pct.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) else {
            continue;
        };
        let name: String = parts.collect::<Vec<_>>().join(" ");
        let key = if kind == "[k]" {
            "[kernel]".to_owned()
        } else {
            name
        };
        *shares.entry(key).or_default() += pct / 100.0;
    }
    shares
}

/// Sum of the shares whose symbol contains `needle`.
pub fn share_of(shares: &HashMap<String, f64>, needle: &str) -> f64 {
    shares
        .iter()
        .filter(|(k, _)| k.contains(needle))
        .map(|(_, v)| v)
        .sum()
}

/// Runs `go tool pprof ARGS FILE`; returns stdout, failing on error.
pub fn go_pprof(args: &[&str], file: &Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go runs");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `perf script` on a `perf record --call-graph dwarf` file: each
/// sample's user stack, innermost first, as perf's symbol names (no inline
/// frames), with the sample count 1.
pub fn perf_user_stacks(data: &Path) -> Vec<Vec<String>> {
    let out = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "--no-inline", "-i"])
        .arg(data)
        .output()
        .expect("perf script runs");
    assert!(
        out.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stacks = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if line.is_empty() {
            if !cur.is_empty() {
                stacks.push(std::mem::take(&mut cur));
            }
            continue;
        }
        // "ADDR SYMBOL (DSO)"
        let Some((_, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let (sym, dso) = match rest.rfind(" (") {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if dso.contains("kernel.kallsyms") || dso.contains("[unknown]") && sym.is_empty() {
            continue;
        }
        cur.push(sym.trim().to_owned());
    }
    if !cur.is_empty() {
        stacks.push(cur);
    }
    stacks
}

/// A symbol name as both perf and the profiler can agree on it: no
/// GCC clone suffix (`.part.0`, `.constprop.0`, `.isra.0`, `.cold`), no
/// symbol version (`@@GLIBC_2.34`), no C++ parameter list, no Rust hash.
pub fn normalize_symbol(name: &str) -> String {
    let mut s = name.trim();
    if let Some(i) = s.find('@') {
        s = &s[..i];
    }
    s = s.strip_suffix(" const").unwrap_or(s);
    // The parameter list: the balanced group at the end.
    if s.ends_with(')') {
        let mut depth = 0;
        for (i, c) in s.char_indices().rev() {
            match c {
                ')' => depth += 1,
                '(' => {
                    depth -= 1;
                    if depth == 0 {
                        if i > 0 {
                            s = &s[..i];
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let mut s = s.to_owned();
    loop {
        let before = s.len();
        for suffix in [".part.", ".constprop.", ".isra.", ".cold", ".lto_priv."] {
            if let Some(i) = s.rfind(suffix) {
                let tail = &s[i + suffix.len()..];
                if tail.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    s.truncate(i);
                }
            }
        }
        if let Some(i) = s.rfind("::h")
            && s.len() - i == 19
            && s[i + 3..].chars().all(|c| c.is_ascii_hexdigit())
        {
            s.truncate(i);
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Caller→callee edges of `stacks` (innermost first), weighted by count,
/// over normalized names; frames named `[...]` break the chain.
pub fn call_edges<'a>(
    stacks: impl IntoIterator<Item = (&'a [String], u64)>,
) -> HashMap<(String, String), u64> {
    let mut edges = HashMap::new();
    for (stack, count) in stacks {
        let names: Vec<String> = stack.iter().map(|n| normalize_symbol(n)).collect();
        for pair in names.windows(2) {
            let (callee, caller) = (&pair[0], &pair[1]);
            if callee.starts_with('[') || caller.starts_with('[') || callee.is_empty() {
                continue;
            }
            *edges.entry((caller.clone(), callee.clone())).or_default() += count;
        }
    }
    edges
}
