//! Function names for heap profiles' addresses, resolved in a short-lived helper process
//! (feature `profiler`).
//!
//! Naming an address means parsing the binary's debug information (DWARF abbreviations and
//! line programs, per compilation unit). `backtrace` caches what it parsed for the life of
//! the process and never frees it: about 115 MB for paywarden, kept by a service whose own
//! heap is a few MB. So a service never symbolizes in its own process. It translates each
//! return address to the object it lies in and its address in that object's file
//! ([`translate`]), starts a helper (by default its own binary again, `/proc/self/exe`, which
//! is the running binary even if the file on disk was replaced since), writes the batch to
//! the helper's stdin and reads the names from its stdout. The helper parses what it needs,
//! answers, and exits: the memory goes with it.
//!
//! **The service's side** is [`symbolize`], one helper per batch of at most
//! [`ADDRESSES_PER_REQUEST_MAX`] addresses, bounded in time ([`HelperCommand::timeout`],
//! default [`SYMBOLIZE_TIMEOUT`]) and in output ([`OUTPUT_BYTES_MAX`]); the helper is killed
//! if the caller gives up. A helper that fails gives an error that says what failed.
//!
//! **The helper's side** is [`serve_if_helper`], which a service calls first thing in `main`:
//! in the service it returns at once; in a helper (environment variable
//! [`SYMBOLIZER_ENV`] set) it answers and exits the process.
//! [`crate::profiler::read_mappings_before_threads`] calls it too, as a safety net for
//! services that call that first.
//!
//! **Protocol, v1.** The helper is started with `MEMGUARD_SYMBOLIZER=1` and
//! `_RJEM_MALLOC_CONF=prof:false` (it samples nothing). It first prints an empty line and
//! [`MARKER`]; the service skips everything before the marker (a test harness may print its
//! own lines first). Request, one line per address: the address in the object's file, in hex,
//! a tab, and the object's identity (its GNU build id in hex, or its path if it has none).
//! The address is the byte inside the call (the return address minus one). Answer, one line
//! per request line, in order: the function names, innermost inlined frame first, separated
//! by tabs, without Rust's hash suffixes; empty if unknown.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The environment variable that makes a process a symbolizer helper.
pub const SYMBOLIZER_ENV: &str = "MEMGUARD_SYMBOLIZER";
/// The helper's first line of its own (after an empty one); what comes before it is not its.
pub const MARKER: &str = "memguard-symbolizer v1";
/// How long one helper may take to answer a batch, from start to exit.
pub const SYMBOLIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// Addresses sent to one helper; a larger batch takes several helpers, one after the other.
pub const ADDRESSES_PER_REQUEST_MAX: usize = 65_536;
/// Bytes of a helper's stdout read, marker and answers included.
pub const OUTPUT_BYTES_MAX: u64 = 64 << 20;
/// Bytes of a helper's stderr kept for the error message (the first ones).
pub const STDERR_BYTES_MAX: usize = 4 << 10;
/// Bytes of one request line the helper reads; a longer line is answered as unknown.
pub const REQUEST_LINE_BYTES_MAX: usize = 4 << 10;
/// Names (inlined frames) answered per address.
pub const NAMES_PER_ADDRESS_MAX: usize = 64;

/// One loaded segment of an object (the executable or a shared library) of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMapping {
    /// Where the segment starts in the process's memory.
    pub memory_start: u64,
    /// One past its end.
    pub memory_end: u64,
    /// Where it starts in the object's own address space (its ELF `p_vaddr`).
    pub memory_offset: u64,
    /// Which object: its GNU build id in hex, or its path if it has none.
    pub identity: String,
}

/// The segments of this process's objects, from the `mappings` crate (read once; a service
/// reads them before its threads start, see [`crate::profiler::read_mappings_before_threads`]).
/// Objects with neither a build id nor a path usable on one line are left out.
pub fn process_mappings() -> Vec<ObjectMapping> {
    let Some(all) = mappings::MAPPINGS.as_ref() else { return Vec::new() };
    all.iter()
        .filter_map(|m| {
            let identity = match &m.build_id {
                Some(id) => id.to_string(),
                None => m.pathname.to_string_lossy().into_owned(),
            };
            if identity.is_empty() || identity.contains(['\t', '\n', '\r']) {
                return None;
            }
            Some(ObjectMapping { memory_start: m.memory_start as u64, memory_end: m.memory_end as u64, memory_offset: m.memory_offset as u64, identity })
        })
        .collect()
}

/// The mapping `pc` lies in and `pc`'s address in that object's file, if any.
pub fn translate(pc: u64, mappings: &[ObjectMapping]) -> Option<(&ObjectMapping, u64)> {
    let m = mappings.iter().find(|m| m.memory_start <= pc && pc < m.memory_end)?;
    Some((m, pc - m.memory_start + m.memory_offset))
}

/// Where the object `identity`'s address `svma` lies in this process, given this process's
/// own mappings: the inverse of [`translate`]. `None` if no loaded segment of that object
/// holds it.
pub fn own_address(identity: &str, svma: u64, own: &[ObjectMapping]) -> Option<u64> {
    let m = own.iter().find(|m| m.identity == identity && m.memory_offset <= svma && svma - m.memory_offset < m.memory_end - m.memory_start)?;
    Some(m.memory_start - m.memory_offset + svma)
}

/// How to start a helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperCommand {
    /// Default `/proc/self/exe`: this process's own binary, which calls [`serve_if_helper`].
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Default [`SYMBOLIZE_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for HelperCommand {
    fn default() -> Self {
        HelperCommand { program: PathBuf::from("/proc/self/exe"), args: Vec::new(), timeout: SYMBOLIZE_TIMEOUT }
    }
}

/// Why a batch could not be symbolized.
#[derive(Debug, thiserror::Error)]
#[error("symbolizer helper `{program}`: {problem}")]
pub struct SymbolizeError {
    pub program: String,
    pub problem: String,
}

/// Names each return address of `addrs` (as a heap profile records them: the address after
/// the call) through helpers started by `command`, `mappings` being this process's
/// ([`process_mappings`]). One answer per address, in order: names innermost inlined frame
/// first, empty if unknown. Starts no helper if no address lies in a mapping.
pub async fn symbolize(command: &HelperCommand, mappings: &[ObjectMapping], addrs: &[u64]) -> Result<Vec<Vec<String>>, SymbolizeError> {
    let mut answers = vec![Vec::new(); addrs.len()];
    for (chunk_no, chunk) in addrs.chunks(ADDRESSES_PER_REQUEST_MAX).enumerate() {
        let mut requests = String::new();
        let mut asked = Vec::new(); // indexes into `answers`
        for (i, &addr) in chunk.iter().enumerate() {
            // A return address points past the call; one byte back is inside it.
            let Some((m, svma)) = translate(addr.saturating_sub(1), mappings) else { continue };
            requests.push_str(&format!("{svma:x}\t{}\n", m.identity));
            asked.push(chunk_no * ADDRESSES_PER_REQUEST_MAX + i);
        }
        if asked.is_empty() {
            continue;
        }
        let names = run_helper(command, requests.into_bytes(), asked.len()).await?;
        assert_eq!(names.len(), asked.len(), "one answer per request line");
        for (i, n) in asked.into_iter().zip(names) {
            answers[i] = n;
        }
    }
    Ok(answers)
}

/// Starts one helper, sends it `requests` (`n` lines) and reads its `n` answers.
async fn run_helper(command: &HelperCommand, requests: Vec<u8>, n: usize) -> Result<Vec<Vec<String>>, SymbolizeError> {
    let fail = |problem: String| SymbolizeError { program: command.program.display().to_string(), problem };
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .env(SYMBOLIZER_ENV, "1")
        // The helper only reads debug information: sampling its allocations is waste.
        .env("_RJEM_MALLOC_CONF", "prof:false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        return Err(fail("started without its pipes".into()));
    };
    let write = async move {
        // A helper that stops reading early says why in its answers or its exit status.
        let _ = stdin.write_all(&requests).await;
        let _ = stdin.shutdown().await;
    };
    let read = read_answers(tokio::io::BufReader::new(stdout.take(OUTPUT_BYTES_MAX)), n);
    let exchange = async {
        let ((), answers, stderr) = tokio::join!(write, read, read_head(stderr, STDERR_BYTES_MAX));
        let status = child.wait().await;
        (answers, stderr, status)
    };
    // On a timeout `child` is dropped with the exchange's futures, which kills it.
    let (answers, stderr, status) = tokio::time::timeout(command.timeout, exchange)
        .await
        .map_err(|_| fail(format!("no complete answer within {:?} for {n} addresses; killed", command.timeout)))?;
    match (answers, status) {
        (Ok(names), Ok(s)) if s.success() => Ok(names),
        (answers, status) => {
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown exit status ({e})"),
            };
            let what = match answers {
                Ok(_) => "answered, then failed".to_string(),
                Err(e) => e,
            };
            let stderr = String::from_utf8_lossy(&stderr);
            let stderr = stderr.trim();
            Err(fail(format!("{what}; {status}{}{stderr}", if stderr.is_empty() { "" } else { "; its stderr: " })))
        }
    }
}

/// Skips to the marker line, then reads `n` answer lines.
async fn read_answers<R: AsyncBufRead + Unpin>(mut out: R, n: usize) -> Result<Vec<Vec<String>>, String> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = out.read_until(b'\n', &mut line).await.map_err(|e| format!("reading its output: {e}"))?;
        if read == 0 {
            return Err(format!(
                "its output ended before the line `{MARKER}` (a service must call `memguard::symbolizer::serve_if_helper()` first in `main`; output limit {OUTPUT_BYTES_MAX} bytes)"
            ));
        }
        if trim_line_end(&line) == MARKER.as_bytes() {
            break;
        }
    }
    let mut answers = Vec::with_capacity(n);
    while answers.len() < n {
        line.clear();
        let read = out.read_until(b'\n', &mut line).await.map_err(|e| format!("reading its output: {e}"))?;
        if read == 0 || line.last() != Some(&b'\n') {
            return Err(format!("it answered {} of {n} addresses (output limit {OUTPUT_BYTES_MAX} bytes)", answers.len()));
        }
        answers.push(parse_answer(&line));
    }
    Ok(answers)
}

/// The first `max` bytes of `r`, reading it to its end (so the writer never blocks on it).
async fn read_head<R: AsyncRead + Unpin>(mut r: R, max: usize) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(k) = r.read(&mut buf).await {
        if k == 0 {
            break;
        }
        let keep = k.min(max - head.len());
        head.extend_from_slice(&buf[..keep]);
    }
    head
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One answer line's names.
pub fn parse_answer(line: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(trim_line_end(line)).split('\t').filter(|s| !s.is_empty()).take(NAMES_PER_ADDRESS_MAX).map(str::to_string).collect()
}

/// One request line's address and identity.
pub fn parse_request(line: &[u8]) -> Option<(u64, &str)> {
    let line = std::str::from_utf8(trim_line_end(line)).ok()?;
    let (svma, identity) = line.split_once('\t')?;
    Some((u64::from_str_radix(svma, 16).ok()?, identity))
}

/// If this process was started as a symbolizer helper ([`SYMBOLIZER_ENV`] set), answers the
/// requests on stdin and exits the process; otherwise returns at once. Call it first thing in
/// `main`, before anything else reads the arguments, starts threads or prints.
pub fn serve_if_helper() {
    if std::env::var_os(SYMBOLIZER_ENV).is_none() {
        return;
    }
    let own = process_mappings();
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let code = match serve(std::io::stdin().lock(), out, &own, &mut resolve_here) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("memguard symbolizer helper: {e}");
            1
        }
    };
    // The parsed debug information goes with the process.
    std::process::exit(code);
}

/// The helper's loop, on any input and output: prints the marker, then answers each request
/// line (at most [`ADDRESSES_PER_REQUEST_MAX`]) with the names `resolve` gives for its
/// address in this process (`own` being this process's mappings). Returns the lines answered.
pub fn serve(mut input: impl BufRead, mut output: impl Write, own: &[ObjectMapping], resolve: &mut dyn FnMut(u64) -> Vec<String>) -> std::io::Result<usize> {
    // The empty line ends whatever a test harness left unfinished on the line before.
    writeln!(output)?;
    writeln!(output, "{MARKER}")?;
    output.flush()?;
    let mut line = Vec::new();
    let mut answered = 0;
    while answered < ADDRESSES_PER_REQUEST_MAX {
        line.clear();
        let read = (&mut input).take(REQUEST_LINE_BYTES_MAX as u64).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && read == REQUEST_LINE_BYTES_MAX {
            // Too long: skip to its end, answer it as unknown.
            let mut rest = Vec::new();
            while (&mut input).take(REQUEST_LINE_BYTES_MAX as u64).read_until(b'\n', &mut rest)? == REQUEST_LINE_BYTES_MAX && rest.last() != Some(&b'\n') {
                rest.clear();
            }
            line.clear();
        }
        let names = parse_request(&line).and_then(|(svma, identity)| own_address(identity, svma, own)).map(&mut *resolve).unwrap_or_default();
        for (i, name) in names.iter().take(NAMES_PER_ADDRESS_MAX).enumerate() {
            if i > 0 {
                output.write_all(b"\t")?;
            }
            output.write_all(name.replace(['\t', '\n', '\r'], " ").as_bytes())?;
        }
        output.write_all(b"\n")?;
        answered += 1;
    }
    output.flush()?;
    Ok(answered)
}

/// Names at the byte `pc` in this process, innermost inlined frame first, without hash
/// suffixes.
fn resolve_here(pc: u64) -> Vec<String> {
    let mut names = Vec::new();
    // `backtrace::resolve` takes a return address and looks one byte back; `pc` is already
    // the byte inside the call, so hand it the byte after.
    backtrace::resolve(pc.wrapping_add(1) as usize as *mut std::ffi::c_void, |symbol| {
        if let Some(name) = symbol.name() {
            names.push(format!("{name:#}"));
        }
    });
    names
}
