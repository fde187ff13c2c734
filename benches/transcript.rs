//! The transcript meter on a ~100 MB Claude Code transcript, in one run:
//! - the first full read, in-process (`agents::read_transcript` from a fresh state) and through
//!   the CLI (`status --json` with no cache file), as MB/s (target >= 1 GB/s, issue 10);
//! - `checkpoint` after a ~1 KB append to the transcript against `checkpoint --tokens N` in a
//!   session without a transcript, as a ratio (target <= 1.2x, issue 10).
//!
//! Run with `cargo bench --bench transcript [-- SIZE_MB]` (default 100 MiB). Prints medians and
//! ratios; asserts nothing. The transcript is generated, so it sits in the page cache: the
//! "first read" figures are parse-bound, not disk-bound.

use orchestrator::agents::{self, TranscriptState};
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{commit_everything, median, ms, time};

/// Alternating checkpoint iterations.
const RUNS: usize = 100;
/// Fixed clock for every run of the binary: leases never run out.
const NOW: &str = "2025-11-06T00:13:55Z";
/// Bytes of the record appended before each incremental checkpoint.
const APPEND_LEN: usize = 1024;

fn main() {
    let size_mib: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(100, |a| a.parse().expect("SIZE_MB is a number"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let tmp_path = tmp.path().canonicalize().expect("canonical temp dir");
    let home = tmp_path.join("home");
    let projects = home.join(".claude/projects/-work-bench");
    fs::create_dir_all(&projects).unwrap();
    let transcript = projects.join("0b5e2c1a-4f7d-4c59-9a53-6f0d2e8b7c41.jsonl");

    // 1. The transcript.
    let started = Instant::now();
    let expected = generate(&transcript, size_mib * 1024 * 1024);
    let len = fs::metadata(&transcript).unwrap().len();
    println!(
        "transcript: {:.1} MB ({} lines: {} assistant, {} sidechain, {} compactions) generated in {:.1} s",
        mb(len),
        expected.lines,
        expected.assistant_lines,
        expected.sidechain_lines,
        expected.compactions,
        started.elapsed().as_secs_f64()
    );

    // 2. First full read.
    let (in_process, state) = first_reads(&transcript, len, &expected);
    let ws_a = tmp_path.join("with_transcript");
    let ws_c = tmp_path.join("without_transcript");
    workspace(&ws_a, &home, Some(&transcript));
    workspace(&ws_c, &home, None);
    let cache_dir = ws_a.join(orchestrator::store::STATE_DIR).join("cache");
    let mut cold = Vec::new();
    for _ in 0..3 {
        let _ = fs::remove_dir_all(&cache_dir);
        let mut cmd = orchestrator(&ws_a, &home, &["status", "--json", "--exit-zero"]);
        cold.push(time(&mut cmd));
    }
    let mut warm = Vec::new();
    for _ in 0..5 {
        let mut cmd = orchestrator(&ws_a, &home, &["status", "--json", "--exit-zero"]);
        warm.push(time(&mut cmd));
    }
    let (cold_best, cold) = (best(&cold), median(cold));
    let warm = median(warm);
    println!("first full read of {:.1} MB", mb(len));
    println!(
        "  in-process read_transcript:    best {:>7.1} ms ({:>6.0} MB/s), median {:>7.1} ms ({:>6.0} MB/s) of 3",
        ms(in_process.0),
        rate(len, in_process.0),
        ms(in_process.1),
        rate(len, in_process.1)
    );
    println!(
        "  status --json, no cache file:  best {:>7.1} ms ({:>6.0} MB/s), median {:>7.1} ms ({:>6.0} MB/s) of 3",
        ms(cold_best),
        rate(len, cold_best),
        ms(cold),
        rate(len, cold)
    );
    println!(
        "  status --json, cache warm:     median {:>7.1} ms of 5",
        ms(warm)
    );
    println!(
        "  cached state: {} bytes in memory as JSON; cache file {} bytes",
        serde_json::to_vec(&state).unwrap().len(),
        cache_file_len(&cache_dir)
    );

    // 3. The checkpoint ratio.
    let checkpoint = |ws: &Path, tokens: Option<&str>| {
        let mut args = vec!["checkpoint", "m", "--advance", "1", "--exit-zero"];
        if let Some(tokens) = tokens {
            args.extend(["--tokens", tokens]);
        }
        orchestrator(ws, &home, &args)
    };
    time(&mut checkpoint(&ws_a, None)); // the cache is warm from status; once more for symmetry
    time(&mut checkpoint(&ws_c, Some("1000")));
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut full_rereads = 0;
    for i in 0..RUNS {
        let tokens = (60_000 + i * 300).to_string();
        // Rotate the order, so none of the three always runs first after the others.
        for step in 0..3 {
            match (i + step) % 3 {
                0 => {
                    append(&transcript, &appended_record(i));
                    a.push(time(&mut checkpoint(&ws_a, None)));
                    let offset = cache_offset(&cache_dir);
                    if offset != Some(fs::metadata(&transcript).unwrap().len()) {
                        full_rereads += 1;
                    }
                }
                1 => b.push(time(&mut checkpoint(&ws_a, Some(&tokens)))),
                _ => {
                    c.push(time(&mut checkpoint(&ws_c, Some(&tokens))));
                    // Untimed: keeps this session's checkpoint log as long as the other's.
                    time(&mut checkpoint(&ws_c, Some(&tokens)));
                }
            }
        }
    }
    let (a, b, c) = (median(a), median(b), median(c));
    println!("checkpoint, median of {RUNS} alternating runs each");
    println!(
        "  (a) after a {APPEND_LEN} B append (incremental read):        {:>7.2} ms",
        ms(a)
    );
    println!(
        "  (b) --tokens N, same session (reads 0 new bytes):   {:>7.2} ms",
        ms(b)
    );
    println!(
        "  (c) --tokens N, session without a transcript:       {:>7.2} ms",
        ms(c)
    );
    println!(
        "  a/c {:.2}x (target <= 1.2x), a/b {:.2}x",
        ms(a) / ms(c),
        ms(a) / ms(b)
    );
    if full_rereads > 0 {
        println!(
            "  ODD: after {full_rereads} of {RUNS} appends the cache did not end at the file's end"
        );
    }
    println!(
        "  cache file after the runs: {} bytes",
        cache_file_len(&cache_dir)
    );

    // In-process, for scale: the incremental read alone.
    let scratch = tmp_path.join("scratch_cache");
    agents::read_cached(&scratch, &transcript).unwrap();
    let mut inc = Vec::new();
    for i in 0..RUNS {
        append(&transcript, &appended_record(RUNS + i));
        let started = Instant::now();
        let reading = agents::read_cached(&scratch, &transcript).unwrap();
        inc.push(started.elapsed());
        if reading.bytes_read > 2 * APPEND_LEN as u64 {
            println!(
                "  ODD: read_cached after one append read {} bytes",
                reading.bytes_read
            );
        }
    }
    println!(
        "  in-process read_cached after a {APPEND_LEN} B append: {:>7.3} ms (median of {RUNS})",
        ms(median(inc))
    );

    println!();
    println!("summary");
    println!(
        "  transcript first read: {:.0} MB/s in-process (best of 3), {:.0} MB/s via status --json (target >= 1000; file in the page cache)",
        rate(len, in_process.0),
        rate(len, cold_best)
    );
    println!(
        "  checkpoint after 1 KB append: {:.2} ms vs --tokens {:.2} ms = {:.2}x (target <= 1.2x)",
        ms(a),
        ms(c),
        ms(a) / ms(c)
    );
}

/// Three full reads from a fresh state; returns (best, median) and the last state.
fn first_reads(
    path: &Path,
    len: u64,
    expected: &Expected,
) -> ((Duration, Duration), TranscriptState) {
    let mut times = Vec::new();
    let mut last = TranscriptState::default();
    for _ in 0..3 {
        let mut state = TranscriptState::default();
        let started = Instant::now();
        let reading = agents::read_transcript(path, &mut state).expect("transcript reads");
        times.push(started.elapsed());
        let got = (reading.fill, reading.compacted, reading.cumulative);
        let want = (expected.fill, expected.compacted, expected.cumulative);
        if got != want || reading.bytes_read != len || reading.skipped_lines != 0 {
            println!(
                "  ODD: read (fill, compacted, cumulative) {got:?}, generated {want:?}; {} of {len} bytes read, {} lines skipped",
                reading.bytes_read, reading.skipped_lines
            );
        }
        last = state;
    }
    ((best(&times), median(times)), last)
}

// ---------------------------------------------------------------------------
// The transcript

/// What the meter should read from the generated file.
#[derive(Default)]
struct Expected {
    fill: Option<u64>,
    compacted: bool,
    cumulative: u64,
    lines: u64,
    assistant_lines: u64,
    sidechain_lines: u64,
    compactions: u64,
}

/// Deterministic 64-bit LCG (Knuth's MMIX constants), high bits out.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(1000) < percent * 10
    }

    /// Log-uniform in [lo, hi]: many small values, a few large ones.
    fn size(&mut self, lo: u64, hi: u64) -> usize {
        let u = self.below(1 << 20) as f64 / f64::from(1 << 20);
        (lo as f64 * (hi as f64 / lo as f64).powf(u)) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
            .collect()
    }

    fn text_of(&mut self, lo: u64, hi: u64) -> String {
        let len = self.size(lo, hi);
        self.text(len)
    }

    fn base62(&mut self, n: usize) -> String {
        self.chars(
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            n,
        )
    }

    fn uuid(&mut self) -> String {
        let h = self.chars(b"0123456789abcdef", 32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// Code-and-prose-like text of about `len` bytes: quotes, backslashes, newlines, tabs and
    /// some non-ASCII, so the JSON has escapes to scan like a real transcript.
    fn text(&mut self, len: usize) -> String {
        const WORDS: &[&str] = &[
            "the",
            "transcript",
            "session",
            "checkpoint",
            "fn",
            "let",
            "mut",
            "self",
            "return",
            "Ok(())",
            "Err(err)",
            "match",
            "if",
            "else",
            "=>",
            "->",
            "&mut",
            "Vec<u8>",
            "\"quoted\"",
            "C:\\path\\to\\file",
            "{",
            "}",
            "(",
            ");",
            "\n",
            "\n    ",
            "\n        ",
            "\t",
            "// a comment",
            "#[derive(Debug)]",
            "println!(\"{x}\");",
            "é",
            "→",
            "✓",
            "0x1f",
            "use",
            "std::fs",
            "impl",
            "struct",
            "pub",
            "async",
            "await",
            "None",
            "Some(value)",
            "cargo",
            "test",
            "passed",
            "failed",
            "error[E0502]:",
            "warning:",
            "src/meter.rs:42",
            "and",
            "of",
            "to",
            "in",
            "a",
            "is",
            "that",
            "for",
            "it",
            "with",
            "as",
            "on",
            "be",
        ];
        let mut s = String::with_capacity(len + 32);
        while s.len() < len {
            s.push_str(self.pick(WORDS));
            s.push(' ');
        }
        s
    }
}

struct Gen {
    rng: Lcg,
    out: BufWriter<File>,
    written: u64,
    session: String,
    parent: Option<String>,
    side_parent: Option<String>,
    ts: i64,
    context: u64,
    expected: Expected,
}

const TOOLS: &[&str] = &[
    "Read",
    "Read",
    "Read",
    "Edit",
    "Edit",
    "Bash",
    "Bash",
    "Grep",
    "Write",
    "TodoWrite",
];
const FILES: &[&str] = &[
    "/home/dev/work/orchestrator/src/meter.rs",
    "/home/dev/work/orchestrator/src/usage.rs",
    "/home/dev/work/orchestrator/src/commands/checkpoint.rs",
    "/home/dev/work/orchestrator/tests/cli/main.rs",
    "/home/dev/work/orchestrator/README.md",
];

impl Gen {
    fn timestamp(&mut self) -> String {
        self.ts += self.rng.range(1, 40) as i64 * 250;
        let t = chrono::DateTime::from_timestamp_millis(self.ts).unwrap();
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn write(&mut self, record: &Value) {
        let mut bytes = serde_json::to_vec(record).unwrap();
        bytes.push(b'\n');
        self.out.write_all(&bytes).unwrap();
        self.written += bytes.len() as u64;
        self.expected.lines += 1;
    }

    /// The fields every Claude Code record carries, then `extra`.
    fn record(&mut self, kind: &str, sidechain: bool, message: Value, extra: Value) -> Value {
        let uuid = self.rng.uuid();
        let parent = if sidechain {
            self.side_parent.replace(uuid.clone())
        } else {
            self.parent.replace(uuid.clone())
        };
        let mut record = json!({
            "parentUuid": parent,
            "isSidechain": sidechain,
            "userType": "external",
            "cwd": "/home/dev/work/orchestrator",
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": "main",
            "type": kind,
            "message": message,
            "uuid": uuid,
            "timestamp": self.timestamp(),
        });
        if let (Some(record), Value::Object(extra)) = (record.as_object_mut(), extra) {
            record.extend(extra);
        }
        if sidechain {
            self.expected.sidechain_lines += 1;
        }
        record
    }

    fn user_text(&mut self, sidechain: bool, len: usize) {
        let text = self.rng.text(len);
        self.context += len as u64 / 4;
        let r = self.record(
            "user",
            sidechain,
            json!({"role": "user", "content": text}),
            json!({}),
        );
        self.write(&r);
    }

    /// One response: one record per content block, all with the same id and usage.
    /// Returns the tool calls made.
    fn assistant(&mut self, sidechain: bool) -> Vec<(String, &'static str)> {
        let rng = &mut self.rng;
        let id = format!("msg_01{}", rng.base62(22));
        let request = format!("req_011C{}", rng.base62(20));
        let mut blocks = Vec::new();
        let mut tools = Vec::new();
        if rng.chance(30) {
            let thinking = rng.text_of(200, 4000);
            let signature_len = rng.range(300, 900) as usize;
            let signature = rng.base62(signature_len);
            blocks.push(json!({"type": "thinking", "thinking": thinking, "signature": signature}));
        }
        if rng.chance(80) {
            blocks.push(json!({"type": "text", "text": rng.text_of(40, 2000)}));
        }
        let calls = [0, 1, 1, 1, 1, 2, 2, 3][rng.below(8) as usize];
        for _ in 0..calls {
            // A subagent now and then: its records go to the sidechain.
            let name = if !sidechain && rng.chance(2) {
                "Task"
            } else {
                rng.pick(TOOLS)
            };
            let file = rng.pick(FILES);
            let input = match name {
                "Read" => json!({"file_path": file}),
                "Edit" => json!({
                    "file_path": file,
                    "old_string": rng.text_of(50, 3000),
                    "new_string": rng.text_of(50, 3000),
                }),
                "Bash" => json!({
                    "command": rng.text_of(20, 300),
                    "description": rng.text_of(20, 80),
                }),
                "Grep" => {
                    json!({"pattern": rng.text_of(5, 60), "path": "src", "output_mode": "content"})
                }
                "Write" => json!({"file_path": file, "content": rng.text_of(500, 8000)}),
                "TodoWrite" => json!({"todos": (0..rng.range(2, 8)).map(|_| json!({
                    "content": rng.text_of(20, 120),
                    "status": "pending",
                    "activeForm": rng.text_of(20, 120),
                })).collect::<Vec<_>>()}),
                _ => json!({
                    "description": rng.text(30),
                    "prompt": rng.text_of(300, 3000),
                    "subagent_type": "general-purpose",
                }),
            };
            let tool_id = format!("toolu_01{}", rng.base62(22));
            blocks.push(json!({"type": "tool_use", "id": tool_id, "name": name, "input": input}));
            tools.push((tool_id, name));
        }
        if blocks.is_empty() {
            blocks.push(json!({"type": "text", "text": rng.text_of(40, 2000)}));
        }
        let input = rng.range(1, 12);
        let creation = if rng.chance(70) {
            rng.size(100, 8000) as u64
        } else {
            0
        };
        let read = self.context;
        let output = rng.size(20, 3000) as u64;
        let usage = json!({
            "input_tokens": input,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": creation, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output,
            "service_tier": "standard",
        });
        let count = blocks.len();
        let stop = if tools.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        for (i, block) in blocks.into_iter().enumerate() {
            let message = json!({
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-1-20250805",
                "content": [block],
                "stop_reason": (i + 1 == count).then_some(stop),
                "stop_sequence": null,
                "usage": usage,
            });
            let r = self.record(
                "assistant",
                sidechain,
                message,
                json!({"requestId": request}),
            );
            self.write(&r);
            self.expected.assistant_lines += 1;
        }
        self.context += input + creation + output;
        // Subagents count in the session's total, never in the fill (issue 10, point 1).
        self.expected.cumulative += input + creation + read + output;
        if !sidechain {
            self.expected.fill = Some(input + creation + read);
            self.expected.compacted = false;
        }
        tools
    }

    fn tool_result(&mut self, sidechain: bool, tool_id: &str, name: &str) {
        let rng = &mut self.rng;
        let file = rng.pick(FILES);
        let (content, result) = match name {
            "Read" => {
                let text = rng.text_of(300, 30_000);
                let lines = text.matches('\n').count() + 1;
                let result = json!({"type": "text", "file": {
                    "filePath": file, "content": text, "numLines": lines, "startLine": 1, "totalLines": lines,
                }});
                (text, result)
            }
            "Bash" => {
                let text = rng.text_of(50, 8000);
                let result =
                    json!({"stdout": text, "stderr": "", "interrupted": false, "isImage": false});
                (text, result)
            }
            "Edit" => {
                let snippet = rng.text_of(200, 2000);
                let text = format!(
                    "The file {file} has been updated. Here's the result of running `cat -n` on a snippet of the edited file:\n{snippet}"
                );
                let result = json!({"filePath": file, "structuredPatch": [{"oldStart": 10, "lines": [snippet]}]});
                (text, result)
            }
            "Grep" => {
                let text = rng.text_of(50, 5000);
                (text.clone(), json!({"mode": "content", "content": text}))
            }
            "Task" => {
                let text = rng.text_of(500, 4000);
                (
                    text.clone(),
                    json!({"status": "completed", "content": [{"type": "text", "text": text}]}),
                )
            }
            _ => (
                "File created successfully.".to_string(),
                json!({"type": "create", "filePath": file}),
            ),
        };
        self.context += content.len() as u64 / 4;
        let message = json!({"role": "user", "content": [{
            "tool_use_id": tool_id, "type": "tool_result", "content": content, "is_error": false,
        }]});
        let r = self.record("user", sidechain, message, json!({"toolUseResult": result}));
        self.write(&r);
    }

    /// A Task tool's subagent (Claude Code 1.x, inline): its records are on the sidechain and count
    /// in the total but not in the fill.
    fn subagent(&mut self) {
        let saved = self.context;
        self.context = 12_000;
        self.side_parent = None;
        let len = self.rng.size(300, 3000);
        self.user_text(true, len);
        for _ in 0..self.rng.range(3, 10) {
            for (id, name) in self.assistant(true) {
                if name != "Task" {
                    self.tool_result(true, &id, name);
                }
            }
        }
        self.context = saved;
    }

    fn compact(&mut self) {
        let uuid = self.rng.uuid();
        let logical = self.parent.replace(uuid.clone());
        let r = json!({
            "parentUuid": null,
            "logicalParentUuid": logical,
            "isSidechain": false,
            "userType": "external",
            "cwd": "/home/dev/work/orchestrator",
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": "main",
            "type": "system",
            "subtype": "compact_boundary",
            "content": "Conversation compacted",
            "isMeta": false,
            "timestamp": self.timestamp(),
            "uuid": uuid,
            "level": "info",
            "compactMetadata": {"trigger": "auto", "preTokens": self.context},
        });
        self.write(&r);
        self.expected.compacted = true;
        self.expected.fill = None;
        self.expected.compactions += 1;
        let summary = self.rng.text_of(3000, 12_000);
        self.context = 15_000 + summary.len() as u64 / 4;
        let r = self.record(
            "user",
            false,
            json!({"role": "user", "content": summary}),
            json!({"isCompactSummary": true, "isVisibleInTranscriptOnly": true}),
        );
        self.write(&r);
    }

    /// An API error as Claude Code records it: `<synthetic>`, zero usage, ignored.
    fn synthetic(&mut self) {
        let message = json!({
            "id": self.rng.uuid(), "model": "<synthetic>", "role": "assistant", "type": "message",
            "stop_reason": "stop_sequence", "stop_sequence": "",
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            "content": [{"type": "text", "text": "API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"}],
        });
        let r = self.record(
            "assistant",
            false,
            message,
            json!({"isApiErrorMessage": true}),
        );
        self.write(&r);
    }
}

/// Writes a Claude Code transcript of at least `target` bytes; returns what the meter should
/// read from it.
fn generate(path: &Path, target: u64) -> Expected {
    let mut rng = Lcg(0x5eed_0f7a_5c21);
    let session = rng.uuid();
    let mut g = Gen {
        rng,
        out: BufWriter::with_capacity(1 << 20, File::create(path).unwrap()),
        written: 0,
        session,
        parent: None,
        side_parent: None,
        ts: 1_762_387_200_000, // 2025-11-06T00:00:00Z
        context: 14_000,
        expected: Expected::default(),
    };
    while g.written < target {
        // A prompt of a few KB, then the agent's loop until it answers without a tool.
        let len = g.rng.size(200, 6000);
        g.user_text(false, len);
        for _ in 0..g.rng.range(2, 25) {
            if g.rng.chance(1) {
                g.synthetic();
            }
            let tools = g.assistant(false);
            if tools.is_empty() {
                break;
            }
            for (id, name) in tools {
                if name == "Task" {
                    g.subagent();
                }
                g.tool_result(false, &id, name);
            }
            if g.context > 155_000 {
                g.compact();
            }
        }
    }
    g.out.flush().unwrap();
    g.expected
}

/// One main-chain assistant record of exactly APPEND_LEN bytes (with its newline).
fn appended_record(i: usize) -> Vec<u8> {
    let record = |text: &str| {
        json!({
            "parentUuid": format!("00000000-0000-4000-8000-{i:012}"),
            "isSidechain": false,
            "userType": "external",
            "cwd": "/home/dev/work/orchestrator",
            "sessionId": "0b5e2c1a-4f7d-4c59-9a53-6f0d2e8b7c41",
            "version": "2.0.14",
            "gitBranch": "main",
            "type": "assistant",
            "message": {
                "id": format!("msg_01bench{i:016}"),
                "type": "message",
                "role": "assistant",
                "model": "claude-opus-4-1-20250805",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 4,
                    "cache_creation_input_tokens": 250,
                    "cache_read_input_tokens": 60_000 + i * 300,
                    "output_tokens": 120,
                    "service_tier": "standard",
                },
            },
            "requestId": format!("req_011Cbench{i:012}"),
            "uuid": format!("00000000-0000-4000-9000-{i:012}"),
            "timestamp": "2025-11-06T09:00:00.000Z",
        })
    };
    let base = serde_json::to_vec(&record("")).unwrap().len() + 1;
    let words = "Done: the meter now reads only what was appended since the last call. ";
    let text: String = words.chars().cycle().take(APPEND_LEN - base).collect();
    let mut bytes = serde_json::to_vec(&record(&text)).unwrap();
    bytes.push(b'\n');
    bytes
}

fn append(path: &Path, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

// ---------------------------------------------------------------------------
// Workspaces and the binary

fn workspace(root: &Path, home: &Path, transcript: Option<&Path>) {
    fs::create_dir_all(root).unwrap();
    run(root, home, &["init"]);
    run(
        root,
        home,
        &[
            "task",
            "add",
            "t",
            "--title",
            "Bench task",
            "--total",
            "1000000",
        ],
    );
    commit_everything(root, home);
    match transcript {
        Some(path) => run(
            root,
            home,
            &["start", "--transcript", path.to_str().unwrap()],
        ),
        None => run(root, home, &["start"]),
    }
}

/// The binary with nothing from the developer's environment.
fn orchestrator(root: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.args(args)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("ORCHESTRATOR_NOW", NOW)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn run(root: &Path, home: &Path, args: &[&str]) {
    time(&mut orchestrator(root, home, args));
}

/// The one transcript cache file's size, or 0.
fn cache_file_len(cache_dir: &Path) -> u64 {
    cache_file(cache_dir).map_or(0, |p| fs::metadata(p).map_or(0, |m| m.len()))
}

/// The offset the cache file says the next read starts at.
fn cache_offset(cache_dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(cache_file(cache_dir)?).ok()?;
    // The JSON state, then its checksum line.
    let entry: Value = serde_json::from_str(text.lines().next()?).ok()?;
    entry["state"]["offset"].as_u64()
}

fn cache_file(cache_dir: &Path) -> Option<PathBuf> {
    fs::read_dir(cache_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("transcript-"))
        })
}

fn best(samples: &[Duration]) -> Duration {
    samples.iter().copied().min().unwrap()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// MB (10^6 bytes) per second.
fn rate(bytes: u64, d: Duration) -> f64 {
    mb(bytes) / d.as_secs_f64()
}
