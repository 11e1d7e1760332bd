//! Tests only (feature `browser`): a report page in headless Chromium, as a person would see
//! it. At each width the page is measured (a copy with a measuring script appended: the page
//! itself has no script) and screenshotted whole:
//!
//! - console messages (errors in the page, malformed SVG) from Chromium's log;
//! - whether anything makes the page wider than the window (what scrolls inside its own box,
//!   a wide table, a `pre`, does not count);
//! - the charts: how many, how many drawn at a readable size with a line in them, and any two
//!   texts of one chart (tick labels, mark labels, axis descriptions) that overlap, by the
//!   boxes Chromium laid them out in.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long one Chromium run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Tallest screenshot taken, pixels.
pub const SCREENSHOT_HEIGHT_MAX_PX: u32 = 16_000;

/// What the measuring script found at one width.
#[derive(Debug, Clone, Deserialize)]
pub struct Measure {
    /// The window's width without its scrollbar.
    pub viewport_px: f64,
    /// The page's full width and height.
    pub page_width_px: f64,
    pub page_height_px: f64,
    /// `<svg>` elements.
    pub charts: usize,
    /// Charts shown at least 150 × 100 px with a line or point in them.
    pub charts_drawn: usize,
    /// Elements reaching past the window (not inside something that scrolls), described.
    pub wide: Vec<String>,
    /// Texts of one chart whose boxes overlap, described.
    pub overlaps: Vec<String>,
}

/// One width's result.
#[derive(Debug, Clone)]
pub struct Shot {
    pub width_px: u32,
    pub png: PathBuf,
    pub measure: Measure,
}

/// A page rendered at several widths.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Console lines from every run.
    pub console: Vec<String>,
    pub shots: Vec<Shot>,
}

/// Where a crate's tests keep what they render: `TARGET/test-output/NAME`, from the test's
/// `CARGO_TARGET_TMPDIR` (`TARGET/tmp`).
pub fn output_dir(target_tmpdir: &str, name: &str) -> PathBuf {
    let tmp = Path::new(target_tmpdir);
    let dir = tmp.parent().unwrap_or(tmp).join("test-output").join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium"]
        .into_iter()
        .map(PathBuf::from)
        .find(|c| Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
        .unwrap_or_else(|| panic!("chromium is missing: apt-get install chromium"))
}

/// Runs Chromium headless with a fresh profile; (stdout, stderr).
fn run(args: &[String]) -> (String, String) {
    let profile = std::env::temp_dir().join(format!("paywarden-chromium-{}-{}", std::process::id(), unique()));
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"])
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > RUN_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium ran longer than {RUN_TIMEOUT:?}: {args:?}");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting for chromium: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&profile);
    (out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn console_lines(log: &str) -> Vec<String> {
    // `INFO:CONSOLE:12] "message", source: …` (older Chromium: `:CONSOLE(12)]`).
    log.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).map(String::from).collect()
}

const MEASURE: &str = r#"<script>(function(){
var de=document.documentElement,vw=de.clientWidth;
var out={viewport_px:vw,page_width_px:de.scrollWidth,page_height_px:de.scrollHeight,charts:0,charts_drawn:0,wide:[],overlaps:[]};
function clipped(e){for(var p=e.parentElement;p&&p!==de;p=p.parentElement){var o=getComputedStyle(p).overflowX;if(o!=='visible')return true;}return false;}
var all=document.body.getElementsByTagName('*');
for(var i=0;i<all.length&&out.wide.length<20;i++){var e=all[i];if(e.tagName==='SCRIPT')continue;var r=e.getBoundingClientRect();
 if(r.right>vw+0.5&&!clipped(e)){out.wide.push(e.tagName.toLowerCase()+' reaches '+Math.round(r.right)+' px: '+(e.textContent||'').trim().slice(0,80));}}
var svgs=document.querySelectorAll('svg');out.charts=svgs.length;
for(var k=0;k<svgs.length;k++){var s=svgs[k],sr=s.getBoundingClientRect();
 if(sr.width>=150&&sr.height>=100&&s.querySelector('polyline,circle,path'))out.charts_drawn++;
 var ts=[].slice.call(s.querySelectorAll('text')).filter(function(t){return t.textContent.trim()!=='';}).map(function(t){return {t:t.textContent.trim(),r:t.getBoundingClientRect()};});
 for(var a=0;a<ts.length;a++)for(var b=a+1;b<ts.length;b++){var p=ts[a].r,q=ts[b].r;
  var w=Math.min(p.right,q.right)-Math.max(p.left,q.left),h=Math.min(p.bottom,q.bottom)-Math.max(p.top,q.top);
  if(w>1&&h>1&&out.overlaps.length<20)out.overlaps.push('chart '+(k+1)+': "'+ts[a].t+'" overlaps "'+ts[b].t+'"');}}
var pre=document.createElement('pre');pre.id='pw-measure';pre.textContent=JSON.stringify(out);document.body.appendChild(pre);
})();</script>"#;

fn measure(page: &Path, out_dir: &Path, name: &str, width: u32) -> (Measure, Vec<String>) {
    let html = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("reading {}: {e}", page.display()));
    let at = html.rfind("</body>").unwrap_or(html.len());
    let probe = out_dir.join(format!(".{name}-{width}.measure.html"));
    std::fs::write(&probe, format!("{}{MEASURE}{}", &html[..at], &html[at..])).expect("write the measuring copy");
    let (dom, log) = run(&[format!("--window-size={width},900"), "--dump-dom".into(), url(&probe)]);
    let _ = std::fs::remove_file(&probe);
    let json = dom
        .split("<pre id=\"pw-measure\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no measurement from Chromium at {width} px: {}", tail(&log)));
    let json = json.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&");
    let m: Measure = serde_json::from_str(&json).unwrap_or_else(|e| panic!("measurement {json}: {e}"));
    (m, console_lines(&log))
}

fn url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap_or_else(|_| p.to_path_buf()).display())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Renders `page` at each of `widths`, measuring it and writing `out_dir/NAME-WIDTH.png` (the
/// whole page).
pub fn render(page: &Path, out_dir: &Path, name: &str, widths: &[u32]) -> Rendered {
    let mut console = Vec::new();
    let mut shots = Vec::new();
    for &width in widths {
        let (m, c) = measure(page, out_dir, name, width);
        console.extend(c);
        let png = out_dir.join(format!("{name}-{width}.png"));
        let _ = std::fs::remove_file(&png);
        let height = (m.page_height_px.ceil() as u32).clamp(300, SCREENSHOT_HEIGHT_MAX_PX);
        let (_, log) = run(&[format!("--screenshot={}", png.display()), format!("--window-size={width},{height}"), url(page)]);
        console.extend(console_lines(&log));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {} ({e}): {}", png.display(), tail(&log)));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", png.display());
        shots.push(Shot { width_px: width, png, measure: m });
    }
    Rendered { console, shots }
}

impl Rendered {
    /// What a person would find broken: console messages, a page wider than a window of any
    /// of the widths, fewer than `charts` charts drawn, overlapping texts in a chart.
    pub fn problems(&self, charts: usize) -> Vec<String> {
        let mut p: Vec<String> = self.console.iter().map(|c| format!("console: {c}")).collect();
        for s in &self.shots {
            let m = &s.measure;
            let w = s.width_px;
            if (m.viewport_px - f64::from(w)).abs() > 1.0 {
                p.push(format!("{w} px: the window was {} px wide", m.viewport_px));
            }
            if m.page_width_px > m.viewport_px + 0.5 {
                p.push(format!("{w} px: the page is {} px wide", m.page_width_px));
            }
            p.extend(m.wide.iter().map(|x| format!("{w} px: {x}")));
            if m.charts < charts || m.charts_drawn < charts {
                p.push(format!("{w} px: {} charts, {} drawn, {charts} expected", m.charts, m.charts_drawn));
            }
            p.extend(m.overlaps.iter().map(|x| format!("{w} px: {x}")));
        }
        p
    }
}
