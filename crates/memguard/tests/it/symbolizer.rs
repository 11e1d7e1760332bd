//! The symbolizer helper: address translation on synthetic mappings, the helper's loop on
//! in-memory pipes, and real round trips with this test binary as the helper (the test
//! `symbolizer_helper_entry` serves when the parent sets `MEMGUARD_SYMBOLIZER`), up to a heap
//! diff of a profiled child that names its leaking function.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use memguard::symbolizer::{
    own_address, parse_answer, parse_request, process_mappings, serve, serve_if_helper, symbolize, translate, HelperCommand, ObjectMapping,
    MARKER,
};

/// The helper's entry: a no-op test, unless this process was started as a helper.
#[test]
fn symbolizer_helper_entry() {
    serve_if_helper();
}

/// This test binary, running only `symbolizer_helper_entry` (libtest's own lines come before
/// the marker and are skipped).
fn this_binary_as_helper() -> HelperCommand {
    HelperCommand {
        program: std::env::current_exe().expect("test binary"),
        args: ["symbolizer::symbolizer_helper_entry", "--exact", "--nocapture", "--test-threads=1"].map(OsString::from).to_vec(),
        ..HelperCommand::default()
    }
}

fn mapping(start: u64, end: u64, offset: u64, identity: &str) -> ObjectMapping {
    ObjectMapping { memory_start: start, memory_end: end, memory_offset: offset, identity: identity.to_string() }
}

#[test]
fn addresses_translate_to_their_objects_and_back() {
    // The service: its binary at 0x5500_0000_0000 (two segments), a library higher up.
    let service = [
        mapping(0x5500_0000_0000, 0x5500_0010_0000, 0, "aa11"),
        mapping(0x5500_0010_0000, 0x5500_0200_0000, 0x10_0000, "aa11"),
        mapping(0x7f00_0000_0000, 0x7f00_0001_0000, 0x2000, "/lib/libc.so.6"),
    ];
    // The helper: the same objects loaded elsewhere.
    let helper = [
        mapping(0x5600_0000_0000, 0x5600_0010_0000, 0, "aa11"),
        mapping(0x5600_0010_0000, 0x5600_0200_0000, 0x10_0000, "aa11"),
        mapping(0x7e00_0000_2000, 0x7e00_0001_2000, 0x2000, "/lib/libc.so.6"),
    ];
    let check = |pc: u64, identity: &str, svma: u64, in_helper: Option<u64>| {
        let (m, got) = translate(pc, &service).unwrap_or_else(|| panic!("{pc:#x} is mapped"));
        assert_eq!((m.identity.as_str(), got), (identity, svma), "{pc:#x}");
        assert_eq!(own_address(identity, svma, &helper), in_helper, "{pc:#x}");
    };
    check(0x5500_0000_1234, "aa11", 0x1234, Some(0x5600_0000_1234));
    check(0x5500_0123_4567, "aa11", 0x123_4567, Some(0x5600_0123_4567));
    check(0x7f00_0000_0010, "/lib/libc.so.6", 0x2010, Some(0x7e00_0000_2010));
    // Ends are exclusive; nothing outside a mapping is translated.
    assert_eq!(translate(0x5500_0200_0000, &service), None);
    assert_eq!(translate(0x1000, &service), None);
    // An object the helper has not loaded, or an address outside its segments, is unknown.
    assert_eq!(own_address("bb22", 0x1234, &helper), None);
    assert_eq!(own_address("aa11", 0x200_0000, &helper), None);
}

#[test]
fn the_helper_answers_one_line_per_request_in_order() {
    let own = [mapping(0x1000, 0x2000, 0, "aa11")];
    let input = b"10\taa11\nzz\taa11\n20\tbb22\n\n30\taa11\n".to_vec();
    let mut output = Vec::new();
    let mut resolve = |pc: u64| match pc {
        0x1010 => vec!["inlined::inner".to_string(), "outer::f".to_string()],
        0x1030 => vec!["tab\tin::name".to_string()],
        _ => Vec::new(),
    };
    let answered = serve(&input[..], &mut output, &own, &mut resolve).unwrap();
    assert_eq!(answered, 5);
    let text = String::from_utf8(output).unwrap();
    assert_eq!(text, format!("\n{MARKER}\ninlined::inner\touter::f\n\n\n\ntab in::name\n"));
    assert_eq!(parse_answer(b"inlined::inner\touter::f\n"), ["inlined::inner", "outer::f"]);
    assert!(parse_answer(b"\n").is_empty());
    assert_eq!(parse_request(b"ff\t/lib/x y.so\n"), Some((0xff, "/lib/x y.so")));
    assert_eq!(parse_request(b"ff\n"), None);
}

#[test]
fn an_overlong_request_line_is_answered_unknown_and_the_next_one_still_is() {
    let own = [mapping(0x1000, 0x2000, 0, "aa11")];
    let mut input = vec![b'x'; 3 * memguard::symbolizer::REQUEST_LINE_BYTES_MAX + 5];
    input.extend_from_slice(b"\n10\taa11\n");
    let mut output = Vec::new();
    let answered = serve(&input[..], &mut output, &own, &mut |_| vec!["f".to_string()]).unwrap();
    assert_eq!(answered, 2);
    assert_eq!(String::from_utf8(output).unwrap(), format!("\n{MARKER}\n\nf\n"));
}

#[inline(never)]
fn a_function_the_helper_must_name(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

#[inline(never)]
fn another_function_the_helper_must_name(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(7)
}

#[tokio::test]
async fn this_binary_names_its_own_functions_through_the_helper() {
    let f = a_function_the_helper_must_name as fn(u64) -> u64 as usize as u64;
    let g = another_function_the_helper_must_name as fn(u64) -> u64 as usize as u64;
    // As a profile records them: return addresses, one past a byte inside the function.
    let addrs = [1, f + 1, 2, g + 1, f + 1];
    let started = Instant::now();
    let names = symbolize(&this_binary_as_helper(), &process_mappings(), &addrs).await.unwrap();
    eprintln!("symbolizer helper: {} addresses in {:?}", addrs.len(), started.elapsed());
    assert_eq!(names.len(), addrs.len());
    assert!(names[0].is_empty() && names[2].is_empty(), "unmapped addresses are unknown: {names:?}");
    let last = |n: &Vec<String>| n.last().cloned().unwrap_or_default();
    assert!(last(&names[1]).ends_with("symbolizer::a_function_the_helper_must_name"), "{names:?}");
    assert!(last(&names[3]).ends_with("symbolizer::another_function_the_helper_must_name"), "{names:?}");
    assert_eq!(names[4], names[1]);
}

#[tokio::test]
async fn no_helper_is_started_for_addresses_outside_every_mapping() {
    let nothing = HelperCommand { program: "/nonexistent/helper".into(), ..HelperCommand::default() };
    assert_eq!(symbolize(&nothing, &process_mappings(), &[1, 2, 3]).await.unwrap(), vec![Vec::<String>::new(); 3]);
}

/// A mapped address of this binary, so that a helper is started.
fn mapped() -> u64 {
    a_function_the_helper_must_name as fn(u64) -> u64 as usize as u64 + 1
}

#[tokio::test]
async fn a_failing_helper_is_an_error_that_says_what_failed() {
    let mappings = process_mappings();
    // Not a helper at all: exits without the marker.
    let sh = |script: &str| HelperCommand { program: "/bin/sh".into(), args: vec!["-c".into(), script.into()], ..HelperCommand::default() };
    let e = symbolize(&sh("echo a line of its own; echo it went wrong >&2; exit 3"), &mappings, &[mapped()]).await.unwrap_err().to_string();
    assert!(e.contains("before the line `memguard-symbolizer v1`") && e.contains("serve_if_helper"), "{e}");
    assert!(e.contains("exit status: 3") && e.contains("it went wrong"), "{e}");
    // The marker, then too few answers.
    let e = symbolize(&sh(&format!("cat >/dev/null; echo; echo '{MARKER}'")), &mappings, &[mapped(), mapped() + 1]).await.unwrap_err().to_string();
    assert!(e.contains("answered 0 of 2 addresses"), "{e}");
    // A program that cannot start.
    let missing = HelperCommand { program: "/nonexistent/helper".into(), ..HelperCommand::default() };
    let e = symbolize(&missing, &mappings, &[mapped()]).await.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/helper") && e.contains("could not start"), "{e}");
}

#[tokio::test]
async fn a_helper_that_hangs_is_killed_at_the_timeout() {
    let hang = HelperCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "exec sleep 30".into()],
        timeout: Duration::from_millis(300),
    };
    let started = Instant::now();
    let e = symbolize(&hang, &process_mappings(), &[mapped()]).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(e.contains("no complete answer within 300ms"), "{e}");
}

/// Set in the profiled child of the test below.
const PROFILED_ENV: &str = "MEMGUARD_TEST_PROFILED_CHILD";

#[inline(never)]
fn keep_for_the_diff(kept: &mut Vec<Box<[u8]>>) {
    for _ in 0..128 {
        kept.push(std::hint::black_box(vec![7u8; 64 << 10].into_boxed_slice()));
    }
}

/// The whole path: a child of this test binary with jemalloc's profiler on takes two heap
/// profiles around an 8 MiB leak and diffs them; the helper (this binary again) names the
/// leaking function.
#[test]
fn a_heap_diff_names_the_leaking_function_through_the_helper() {
    if std::env::var_os(PROFILED_ENV).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["symbolizer::a_heap_diff_names_the_leaking_function_through_the_helper", "--exact", "--nocapture", "--test-threads=1"])
            .env(PROFILED_ENV, "1")
            .env("_RJEM_MALLOC_CONF", "prof:true,prof_active:true,lg_prof_sample:12")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "profiled child: {}\n{stdout}\n{stderr}", out.status);
        assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
        eprintln!("{stderr}");
        return;
    }
    let profiler = memguard::profiler::HeapProfiler::get().expect("jemalloc profiling on in the child").with_symbolizer(this_binary_as_helper());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let before = profiler.profile(0).await.unwrap();
        let mut kept = Vec::new();
        keep_for_the_diff(&mut kept);
        let after = profiler.profile(10_000).await.unwrap();
        let after_addrs: Vec<u64> = after.stacks.iter().flat_map(|s| s.frames.iter().copied()).collect();
        let started = Instant::now();
        let report = profiler.growing_sites(before, after, memguard::sites::SiteConfig::default()).await.unwrap();
        eprintln!("heap diff with the helper took {:?}: {:?}", started.elapsed(), report.sites.first().map(|s| (&s.function, s.growth_bytes)));
        let top = report.sites.first().unwrap_or_else(|| panic!("a growing site: {report:?}"));
        assert!(top.function.ends_with("symbolizer::keep_for_the_diff"), "{report:?}");
        assert!(top.growth_bytes > 4.0 * 1048576.0, "{report:?}");
        drop(kept);
        // The diff's names are cached: asking for them again starts no helper (this one
        // cannot start), while an address named by no diff yet needs one: an error, no panic.
        let broken = profiler.clone().with_symbolizer(HelperCommand { program: "/nonexistent/helper".into(), ..HelperCommand::default() });
        let names = broken.symbolize(&after_addrs).await.expect("every address cached");
        assert!(names.values().flatten().any(|f| f.ends_with("symbolizer::keep_for_the_diff")));
        let e = broken.symbolize(&[mapped()]).await.unwrap_err().to_string();
        assert!(e.contains("could not start"), "{e}");
    });
}
