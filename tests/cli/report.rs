//! `orchestrator report` (issue 17): per task, agent and day, with cost per unit and an ETA; as
//! tables, JSON, and one self-contained HTML page that a real headless browser (Debian's
//! chromium, which .ci/run installs) renders with no console error and no network request.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use crate::cost::OPUS_LINE;

/// [`OPUS_LINE`] (a real Claude Code line, see cost.rs) as response `id`: $0.227571 each.
fn response(id: &str) -> String {
    let mut v: Value = serde_json::from_str(OPUS_LINE).unwrap();
    v["message"]["id"] = json!(id);
    v["requestId"] = json!(format!("req_{id}"));
    format!("{v}\n")
}

const RESPONSE_USD: f64 = 0.227571;

/// Three sessions on `ingest` (10 units) and one on `dedupe` (6), a day apart, each two hours of
/// work with two checkpoints (+1, +2 units) and two responses in its transcript.
fn history() -> Ws {
    let ws = Ws::new();
    ws.ok(&[
        "task", "add", "ingest", "--title", "Ingest", "--total", "10",
    ]);
    ws.ok(&["task", "add", "dedupe", "--title", "Dedupe", "--total", "6"]);
    for (n, task) in ["ingest", "ingest", "dedupe", "ingest"].iter().enumerate() {
        let day = n + 1;
        let transcript = ws.home().join(format!("t{day}.jsonl"));
        std::fs::write(&transcript, "").unwrap();
        ws.set_now(&format!("2025-11-0{day}T10:00:00Z"));
        ws.ok(&[
            "start",
            "--task",
            task,
            "--agent",
            if day == 3 { "codex" } else { "claude" },
            "--transcript",
            transcript.to_str().unwrap(),
        ]);
        for k in 1..=2 {
            let mut text = std::fs::read_to_string(&transcript).unwrap();
            text.push_str(&response(&format!("msg_{day}_{k}")));
            std::fs::write(&transcript, text).unwrap();
            ws.set_now(&format!("2025-11-0{day}T1{k}:00:00Z"));
            ws.ok(&[
                "checkpoint",
                "step",
                "--advance",
                &k.to_string(),
                "--exit-zero",
            ]);
        }
        ws.ok(&["wrap", "--no-commit"]);
    }
    ws.set_now("2025-11-05T10:00:00Z");
    ws
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap_or(f64::NAN) - b).abs() < 1e-6
}

#[test]
fn per_task_agent_and_day_with_cost_per_unit_and_eta() {
    let ws = history();
    let v = ws.json(0, &["report"]);
    let ingest = &v["tasks"][0];
    assert_eq!(ingest["task"], "ingest");
    assert_eq!(
        (ingest["done"].as_u64(), ingest["total"].as_u64()),
        (Some(9), Some(10))
    );
    assert_eq!(ingest["sessions"], 3);
    assert_eq!(ingest["units"], 9);
    assert!(close(&ingest["cost_usd"], 6.0 * RESPONSE_USD), "{ingest}");
    assert!(close(&ingest["cost_per_unit"], 6.0 * RESPONSE_USD / 9.0));
    // 9 units in 3 sessions of 2 hours: 1.5 units an hour; 1 unit left is 40 minutes.
    assert!(close(&ingest["rate_per_hour"], 1.5));
    assert_eq!(ingest["eta"], "2025-11-05T10:40:00Z");
    let agents: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["claude", "codex"]);
    assert_eq!(v["days"].as_array().unwrap().len(), 4);
    assert_eq!(v["remaining"], 4);
    assert!(close(&v["total"]["cost_usd"], 8.0 * RESPONSE_USD));
    assert_eq!(v["sessions"].as_array().unwrap().len(), 4);
    assert_eq!(v["sessions"][0]["level"], "ok", "74% of the budget at most");

    let only = ws.json(0, &["report", "--task", "dedupe", "--since", "2025-11-03"]);
    assert_eq!(only["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(only["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        only["eta"], "2025-11-05T12:00:00Z",
        "3 units at 1.5 an hour"
    );
    let none = ws.json(0, &["report", "--since", "1h"]);
    assert_eq!(none["total"]["sessions"], 0);
    assert_eq!(none["eta"], Value::Null, "no rate, no guess");

    let err = ws.refused(&["report", "--task", "nope"]);
    assert!(err.contains("no task `nope`"), "{err}");
    let err = ws.refused(&["report", "--since", "last week"]);
    assert!(err.contains("--since"), "{err}");
}

#[test]
fn the_terminal_report_is_aligned_tables_with_bars() {
    let ws = history();
    let text = ws.ok(&["report"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("task "), "{text}");
    // The task table's columns line up: every row is as wide as its header up to the ETA.
    let eta_at = lines[0].find("ETA").unwrap();
    for row in &lines[1..3] {
        assert_eq!(row.chars().take(eta_at).count(), eta_at, "{text}");
        assert!(row.chars().nth(eta_at - 1) == Some(' '), "{text}");
    }
    assert!(
        lines[1].starts_with("ingest  ") && lines[1].contains("9/10  █████████ "),
        "{text}"
    );
    assert!(text.contains("\nagent "), "{text}");
    assert!(text.contains("\nday "), "{text}");
    assert!(text.contains("2025-11-04 "), "{text}");
    assert!(
        text.contains("████████████"),
        "the largest spender fills its bar: {text}"
    );
    assert!(
        text.contains("total: 4 sessions, 12 units,") && text.contains("4 unit(s) left"),
        "{text}"
    );
}

/// Debian's chromium: installed here when missing and possible (CI installs it in .ci/run);
/// `None` only when it cannot be.
fn chromium() -> Option<PathBuf> {
    let found = || {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = found() {
        return Some(path);
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    found()
}

/// A proxy on loopback that records the request line of every request sent through it.
fn recording_proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut first = String::new();
            let _ = BufReader::new(&stream).read_line(&mut first);
            log.lock().unwrap().push(first.trim().to_string());
        }
    });
    (port, seen)
}

/// Chromium's own services (time, component updates, sign-in), which it calls whatever the page.
fn browser_background(request: &str) -> bool {
    ["google.com", "googleapis.com", "gstatic.com", "gvt1.com"]
        .iter()
        .any(|host| {
            request
                .split_whitespace()
                .nth(1)
                .is_some_and(|target| target.contains(host))
        })
}

fn headless(chromium: &Path, proxy: u16, page: &Path, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-background-networking",
            "--disable-component-update",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--proxy-server=http://127.0.0.1:{proxy}"),
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

fn console_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect()
}

fn png_size(path: &Path) -> (u32, u32, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20), bytes.len())
}

/// The `<figure id="ID">` of the page.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page.find(&format!("<figure id=\"{id}\">")).unwrap();
    let end = start + page[start..].find("</figure>").unwrap();
    &page[start..end]
}

#[test]
fn the_html_report_is_self_contained_and_renders_in_a_headless_browser() {
    let ws = history();
    let out = ws.json(0, &["report", "--html", "report.html"]);
    assert_eq!(out["html"], "report.html");
    let page = ws.read("report.html");

    // Self-contained: nothing to fetch, nothing to run.
    for banned in [
        "<script",
        "<link",
        "src=",
        "href=",
        "url(",
        "@import",
        "@font-face",
    ] {
        assert!(!page.contains(banned), "the page has {banned}");
    }
    assert!(page.contains("Content-Security-Policy\" content=\"default-src 'none'"));
    // The charts: one burn-up line per task, one bar per session in each bar chart.
    let burnup = figure(&page, "burnup");
    let mut colours: Vec<&str> = burnup
        .split("<polyline")
        .skip(1)
        .filter(|p| p.contains("stroke-width=\"2\""))
        .filter_map(|p| p.split("stroke=\"").nth(1)?.split('"').next())
        .collect();
    colours.sort();
    colours.dedup();
    assert_eq!(colours.len(), 2, "a series per task");
    for id in ["tokens", "cost"] {
        let bars = figure(&page, id)
            .split("<rect")
            .skip(1)
            .filter(|r| r.contains("fill=\"#1F77B4\"") || r.contains("fill=\"#FF7F0E\""))
            .count();
        assert_eq!(bars, 4, "{id}: a bar per session");
    }
    assert_eq!(page.matches("<td class=\"ok\">ok</td>").count(), 4);
    assert!(page.contains("the stack is done around <strong>2025-11-05 12:40</strong>"));

    let Some(chromium) = chromium() else {
        println!("SKIPPED: chromium is not installed and cannot be (CI installs it in .ci/run)");
        return;
    };
    let (port, requests) = recording_proxy();
    let dir = tempfile::tempdir().unwrap();

    // The detectors work: a page that logs an error and loads an image is caught by both.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><img src=\"http://report-check.invalid/x.png\">\
         <script>console.error('control')</script></body></html>",
    )
    .unwrap();
    let out = headless(&chromium, port, &control, &["--dump-dom"]);
    assert!(
        !console_lines(&out).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wait_for_request = || {
        for _ in 0..100 {
            if requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains("report-check.invalid"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(
        wait_for_request(),
        "the control image went through the proxy: {requests:?}"
    );

    // The report: no console message, no request of its own, charts drawn.
    requests.lock().unwrap().clear();
    let shot = dir.path().join("report.png");
    let report = ws.file("report.html");
    let out = headless(
        &chromium,
        port,
        &report,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,1600",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(console_lines(&out), Vec::<String>::new());
    let dom = headless(&chromium, port, &report, &["--dump-dom"]);
    assert_eq!(console_lines(&dom), Vec::<String>::new());
    let rendered = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        rendered.matches("<svg").count(),
        3,
        "three charts in the DOM"
    );
    assert_eq!(
        rendered
            .matches("<svg width=\"860\" height=\"340\"")
            .count(),
        3,
        "each of the size drawn"
    );
    std::thread::sleep(Duration::from_millis(200));
    let own: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !browser_background(r))
        .cloned()
        .collect();
    assert_eq!(own, Vec::<String>::new(), "the page made network requests");

    // The screenshot is the size asked for, and far from blank: a blank page of the same size
    // compresses to a fraction of it.
    let (width, height, bytes) = png_size(&shot);
    assert_eq!((width, height), (900, 1600));
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank_shot = dir.path().join("blank.png");
    headless(
        &chromium,
        port,
        &blank,
        &[
            &format!("--screenshot={}", blank_shot.display()),
            "--window-size=900,1600",
        ],
    );
    let (_, _, blank_bytes) = png_size(&blank_shot);
    assert!(
        bytes > blank_bytes * 5,
        "the report's screenshot ({bytes} bytes) is hardly more than a blank page's ({blank_bytes})"
    );
}
