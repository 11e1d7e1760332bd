//! The heap-profile diff on synthetic profiles with a fake symbol table.

use memguard::sites::{growing_sites, is_skipped, HeapProfile, ProfiledStack, SiteConfig};

const MIB: f64 = 1048576.0;

/// Addresses 1.. map to these function names (innermost first in every stack below).
fn symbol(addr: u64) -> Vec<String> {
    let name = match addr {
        1 => "_rjem_je_prof_backtrace",
        2 => "_rjem_malloc",
        3 => "alloc::raw_vec::RawVec<T,A>::allocate_in",
        4 => "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
        10 => "paywarden_api::faults::leak_on_confirmed_payment",
        11 => "paywarden_api::App::confirm",
        12 => "tokio::runtime::task::harness::poll",
        20 => "paywarden_store::sqlite::SqliteStore::write",
        30 => "hashbrown::raw::RawTable<T>::reserve_rehash",
        31 => "paywarden_api::IdempotencyCache::insert",
        40 => "gimli::read::line::LineProgram::parse",
        41 => "addr2line::Context::find_frames",
        42 => "memguard::profiler::HeapProfiler::symbolize",
        _ => return Vec::new(),
    };
    vec![name.to_string()]
}

fn stack(frames: &[u64], bytes: f64) -> ProfiledStack {
    ProfiledStack { frames: frames.to_vec(), bytes }
}

#[test]
fn growth_is_attributed_to_the_first_own_frame_and_summed_per_site() {
    let leak_a = [1, 2, 3, 10, 11, 12];
    let leak_b = [1, 2, 4, 10, 11, 12];
    let steady = [1, 2, 20, 12];
    let before = HeapProfile { at_ms: 0, stacks: vec![stack(&leak_a, 10.0 * MIB), stack(&steady, 50.0 * MIB)] };
    let after = HeapProfile {
        at_ms: 10_000,
        stacks: vec![stack(&leak_a, 30.0 * MIB), stack(&leak_b, 10.0 * MIB), stack(&steady, 50.0 * MIB)],
    };
    let mut calls = 0;
    let report = growing_sites(&before, &after, &SiteConfig::default(), &mut |a| {
        calls += 1;
        symbol(a)
    });
    assert_eq!(report.window_s, 10.0);
    assert_eq!(report.heap_growth_bytes, 30.0 * MIB);
    assert_eq!(report.sites.len(), 1, "{report:?}");
    let site = &report.sites[0];
    assert_eq!(site.function, "paywarden_api::faults::leak_on_confirmed_payment");
    assert_eq!(site.growth_bytes, 30.0 * MIB);
    assert_eq!(site.bytes_per_second, 3.0 * MIB);
    assert_eq!(site.share, 1.0);
    assert_eq!(site.live_bytes, 40.0 * MIB);
    // The stack that grew most, from the site outward.
    assert_eq!(site.stack[0], "paywarden_api::faults::leak_on_confirmed_payment");
    assert_eq!(site.stack.last().unwrap(), "tokio::runtime::task::harness::poll");
    // Each distinct address of a growing stack is symbolized once; the steady stack not at all.
    assert_eq!(calls, 7);
}

#[test]
fn collection_growth_names_the_caller_and_sites_are_ranked() {
    let map = [1, 2, 30, 31, 12];
    let leak = [1, 2, 3, 10, 11];
    let before = HeapProfile { at_ms: 1_000, stacks: vec![] };
    let after = HeapProfile { at_ms: 5_000, stacks: vec![stack(&map, 2.0 * MIB), stack(&leak, 6.0 * MIB)] };
    let report = growing_sites(&before, &after, &SiteConfig::default(), &mut symbol);
    let names: Vec<&str> = report.sites.iter().map(|s| s.function.as_str()).collect();
    assert_eq!(names, ["paywarden_api::faults::leak_on_confirmed_payment", "paywarden_api::IdempotencyCache::insert"]);
    assert_eq!(report.sites[0].share, 0.75);
    assert_eq!(report.sites[0].bytes_per_second, 1.5 * MIB);
}

#[test]
fn shrinking_steady_and_sub_threshold_stacks_are_not_reported() {
    let a = [1, 2, 10];
    let b = [1, 2, 20];
    let c = [1, 2, 31];
    let before = HeapProfile { at_ms: 0, stacks: vec![stack(&a, 8.0 * MIB), stack(&b, 4.0 * MIB), stack(&c, 1.0 * MIB)] };
    // a shrinks, b is steady, c grows by less than the 1 MiB noise floor.
    let after = HeapProfile { at_ms: 60_000, stacks: vec![stack(&a, 2.0 * MIB), stack(&b, 4.0 * MIB), stack(&c, 1.5 * MIB)] };
    let report = growing_sites(&before, &after, &SiteConfig::default(), &mut symbol);
    assert!(report.sites.is_empty(), "{report:?}");
    assert_eq!(report.heap_growth_bytes, -5.5 * MIB);
}

#[test]
fn stacks_without_own_code_or_symbols_are_still_reported() {
    let runtime_only = [1, 2, 3];
    let unknown = [900, 901];
    let after = HeapProfile { at_ms: 1_000, stacks: vec![stack(&runtime_only, 4.0 * MIB), stack(&unknown, 2.0 * MIB)] };
    let report = growing_sites(&HeapProfile::default(), &after, &SiteConfig::default(), &mut symbol);
    let names: Vec<&str> = report.sites.iter().map(|s| s.function.as_str()).collect();
    assert_eq!(names, ["_rjem_je_prof_backtrace", "<unknown>"]);
}

#[test]
fn the_report_is_bounded() {
    let before = HeapProfile::default();
    let stacks = (0..50u64).map(|i| stack(&[1, 2, 1000 + i], (2 + i) as f64 * MIB)).collect();
    let after = HeapProfile { at_ms: 1_000, stacks };
    let config = SiteConfig { sites_max: 3, ..SiteConfig::default() };
    let report = growing_sites(&before, &after, &config, &mut |a| if a < 1000 { symbol(a) } else { vec![format!("app::f{a}")] });
    assert_eq!(report.sites.len(), 3);
    assert_eq!(report.sites[0].function, "app::f1049");
    // Shares are of all growth above the noise floor, not only of the sites shown.
    let total: f64 = (0..50).map(|i| (2 + i) as f64).sum();
    assert!((report.sites[0].share - 51.0 / total).abs() < 1e-12);
}

#[test]
fn standard_library_trait_impls_and_allocator_internals_are_skipped() {
    let skip = SiteConfig::default().skip_prefixes;
    for f in [
        "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
        "<alloc::vec::Vec<T,A> as core::clone::Clone>::clone",
        "<&mut serde_json::ser::Serializer<W> as core::fmt::Write>::write_str",
        "<alloc::string::String>::push_str",
        "irallocx_prof",
        "__rustc::__rust_alloc",
        "_rjem_je_prof_backtrace",
        "__rust_alloc",
        "gimli::read::line::LineProgramHeader<R,Offset>::parse",
        "hashbrown::raw::RawTable<T,A>::reserve_rehash",
    ] {
        assert!(is_skipped(f, &skip), "{f} is not the program's own code");
    }
    for f in [
        "paywarden_api::faults::leak_on_confirmed_payment",
        "<paywarden_api::App>::post",
        "<paywarden_store::sqlite::SqliteStore as paywarden_store::Store>::write",
        "tokio::runtime::task::raw::poll",
    ] {
        assert!(!is_skipped(f, &skip), "{f} is code a developer would open");
    }
}

#[test]
fn the_symbolizers_own_memory_is_never_a_site() {
    // The profiler's symbolizer parses debug information on a tokio blocking thread: its
    // allocations' first frame past the skipped ones is tokio's, yet they are not the program's.
    let symbolizer = [1, 2, 3, 40, 41, 42, 12];
    let leak = [1, 2, 3, 10, 11, 12];
    let before = HeapProfile { at_ms: 0, stacks: vec![] };
    let after = HeapProfile { at_ms: 10_000, stacks: vec![stack(&symbolizer, 40.0 * MIB), stack(&leak, 2.0 * MIB)] };
    let report = growing_sites(&before, &after, &SiteConfig::default(), &mut symbol);
    let names: Vec<&str> = report.sites.iter().map(|s| s.function.as_str()).collect();
    assert_eq!(names, ["paywarden_api::faults::leak_on_confirmed_payment"], "{report:?}");
    // Without the exclusion the symbolizer would have been blamed (on tokio's frame).
    let open = SiteConfig { exclude_prefixes: Vec::new(), ..SiteConfig::default() };
    let report = growing_sites(&before, &after, &open, &mut symbol);
    assert_eq!(report.sites[0].function, "tokio::runtime::task::harness::poll");
}
