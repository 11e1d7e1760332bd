//! The shipped Prometheus rules parse (`promtool check rules`) and do what their tests say
//! (`promtool test rules`), with the real promtool from Debian's `prometheus` package.

use std::process::Command;

#[test]
fn shipped_rules_pass_promtool_check_and_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have promtool: apt-get install prometheus");
        eprintln!("SKIPPED: promtool not installed (apt-get install prometheus)");
        return;
    }
    for args in [&["check", "rules", "rules.yml"][..], &["test", "rules", "rules_test.yml"][..]] {
        let out = Command::new("promtool").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
