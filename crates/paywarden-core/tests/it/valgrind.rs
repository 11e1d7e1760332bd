//! The test binary runs itself again under valgrind's memcheck: no definitely lost block, no
//! invalid read or write, in any test but the property tests with thousands of cases (which
//! valgrind would take minutes over; their code paths are the same). Shared by the core
//! crates' test binaries (`paywarden-core`, `paywarden-acquirer`).

use std::process::Command;

/// Set in the run under valgrind, so that it does not start another.
const UNDER_VALGRIND: &str = "PAYWARDEN_UNDER_VALGRIND";

/// Runs the current test binary under memcheck, skipping `skip` (test name filters); panics
/// with valgrind's report on a leak or a memory error.
pub fn rerun_under_valgrind(skip: &[&str]) {
    if std::env::var_os(UNDER_VALGRIND).is_some() {
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "valgrind is missing (Debian package valgrind); .ci/run installs it");
        eprintln!("valgrind is not installed: the memcheck run is skipped (apt-get install valgrind)");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new("valgrind");
    cmd.args(["--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99", "-q"])
        .arg(&exe)
        .args(["--test-threads", "2", "--skip", "under_valgrind"])
        .env(UNDER_VALGRIND, "1");
    for s in skip {
        cmd.args(["--skip", s]);
    }
    let out = cmd.output().expect("run valgrind");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "under valgrind (exit {:?}):\n{stderr}\n{stdout}", out.status.code());
    assert!(stdout.contains("test result: ok"), "{stdout}");
}
