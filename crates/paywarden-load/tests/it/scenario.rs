use std::time::Duration;

use paywarden_load::scenario::{
    Flow, MAX_IN_FLIGHT_DEFAULT, Mix, Operation, RETRY_SHARE_DEFAULT, Scenario, ScenarioError,
    builtin, from_toml,
};
use paywarden_load::schedule::{Executor, Stage};
use paywarden_load::threshold::Threshold;

const GOOD: &str = r#"name = "checkout-peak"
max_in_flight = 1000
retry_share = 0.05
thresholds = ["p99<50ms", "error_rate<0.1%", "confirm.p99.9<200ms"]

[mix]
auto_capture = 80
manual_capture = 10
decline = 5
partial_refund = 5

[executor]
kind = "ramping-arrival-rate"
start_rate = 10
stages = [{ target = 200, duration = "30s" }, { target = 200, duration = "5m" }]
"#;

#[test]
fn good_file_reads_into_the_expected_scenario() {
    let scenario = from_toml(GOOD, "scenarios/peak.toml").expect("valid");
    let expected = Scenario {
        name: "checkout-peak".to_string(),
        mix: Mix::new(vec![
            (Flow::AutoCapture, 80),
            (Flow::ManualCapture, 10),
            (Flow::Decline, 5),
            (Flow::PartialRefund, 5),
        ])
        .expect("valid mix"),
        retry_share: 0.05,
        executor: Executor::RampingArrivalRate {
            start_rate: 10.0,
            stages: vec![
                Stage {
                    target: 200.0,
                    duration: Duration::from_secs(30),
                },
                Stage {
                    target: 200.0,
                    duration: Duration::from_secs(300),
                },
            ],
        },
        thresholds: ["p99<50ms", "error_rate<0.1%", "confirm.p99.9<200ms"]
            .iter()
            .map(|t| t.parse::<Threshold>().expect("valid threshold"))
            .collect(),
        max_in_flight: 1000,
    };
    assert_eq!(scenario, expected);
    assert_eq!(scenario.validate(), Ok(()));
}

#[test]
fn minimal_file_takes_defaults() {
    let text = "[executor]\nkind = \"constant-arrival-rate\"\nrate = 50\nduration = \"1m\"\n";
    let scenario = from_toml(text, "dir/smoke.toml").expect("valid");
    assert_eq!(scenario.name, "smoke");
    assert_eq!(scenario.mix, Mix::payments());
    assert_eq!(scenario.retry_share, RETRY_SHARE_DEFAULT);
    assert_eq!(scenario.max_in_flight, MAX_IN_FLIGHT_DEFAULT);
    assert!(scenario.thresholds.is_empty());
    assert_eq!(
        scenario.executor,
        Executor::ConstantArrivalRate {
            rate: 50.0,
            duration: Duration::from_secs(60)
        }
    );
    assert_eq!(from_toml(text, "").expect("valid").name, "custom");

    let vus = "[executor]\nkind = \"constant-vus\"\nvus = 20\nduration = \"10s\"\n";
    assert_eq!(
        from_toml(vus, "v.toml").expect("valid").executor,
        Executor::ConstantVus {
            vus: 20,
            duration: Duration::from_secs(10)
        }
    );
}

/// Reads `text` and expects an error at `line:column` whose message contains `needle`.
fn check_error(text: &str, line: usize, column: usize, needle: &str) {
    let error: ScenarioError = match from_toml(text, "s.toml") {
        Ok(s) => panic!("expected an error containing {needle:?}, got {s:?}"),
        Err(e) => e,
    };
    assert!(error.message.contains(needle), "{error} lacks {needle:?}");
    assert_eq!((error.line, error.column), (line, column), "{error}");
    assert_eq!(error.file, "s.toml");
    assert!(
        error
            .to_string()
            .starts_with(&format!("s.toml:{line}:{column}: ")),
        "{error}"
    );
}

const EXEC: &str = "[executor]\nkind = \"constant-arrival-rate\"\nrate = 50\nduration = \"1m\"\n";

#[test]
fn syntax_error_has_its_position() {
    check_error("name = \"x\"\nretry_share = = 0.1\n", 2, 15, "");
}

#[test]
fn wrong_type_points_at_the_value() {
    check_error(
        &format!("max_in_flight = \"many\"\n{EXEC}"),
        1,
        17,
        "integer",
    );
    check_error("name = \"x\"\n", 1, 1, "executor");
    check_error(
        &format!("retry_share = \"high\"\n{EXEC}"),
        1,
        15,
        "expected a number",
    );
}

#[test]
fn unknown_key_points_at_the_key() {
    check_error(
        &format!("name = \"x\"\nmax_inflight = 3\n{EXEC}"),
        2,
        1,
        "max_inflight",
    );
    check_error(
        &format!("[mix]\nauto_capture = 1\nrefund = 2\n{EXEC}"),
        3,
        1,
        "refund",
    );
    check_error(
        "[executor]\nkind = \"constant-arrival-rate\"\nrate = 50\nduration = \"1m\"\nvu = 3\n",
        5,
        1,
        "vu",
    );
    check_error(
        "[executor]\nkind = \"ramping-arrival-rate\"\nstages = [{ target = 1, duration = \"1s\", ramp = 2 }]\n",
        3,
        42,
        "ramp",
    );
}

#[test]
fn invalid_values_point_at_the_value() {
    // Executor::validate, located.
    check_error(
        "[executor]\nkind = \"constant-arrival-rate\"\nrate = 0\nduration = \"1m\"\n",
        3,
        8,
        "rate is 0",
    );
    check_error(
        "[executor]\nkind = \"constant-arrival-rate\"\nrate = 10\nduration = \"0s\"\n",
        4,
        12,
        "duration is 0",
    );
    check_error(
        "[executor]\nkind = \"ramping-arrival-rate\"\nstages = [{ target = 1, duration = \"1s\" },\n  { target = -4, duration = \"1s\" }]\n",
        4,
        14,
        "stages[1].target is -4",
    );
    check_error(
        "[executor]\nkind = \"ramping-arrival-rate\"\nstages = [{ target = 1, duration = \"soon\" }]\n",
        3,
        36,
        "not a duration",
    );
    check_error(
        "[executor]\nkind = \"constant-arrival-rat\"\nrate = 10\nduration = \"1s\"\n",
        2,
        8,
        "unknown executor kind",
    );
    check_error(
        "[executor]\nkind = \"constant-vus\"\nrate = 10\nduration = \"1s\"\n",
        3,
        8,
        "rate does not apply to constant-vus",
    );
    check_error(
        "[executor]\nkind = \"constant-vus\"\nduration = \"1s\"\n",
        1,
        1,
        "needs vus",
    );
    // Mix::new, located at the table.
    check_error(
        &format!("[mix]\nauto_capture = 0\n{EXEC}"),
        1,
        1,
        "every weight is 0",
    );
    check_error(
        &format!("[mix]\ndecline = -1\n{EXEC}"),
        2,
        11,
        "whole number",
    );
    // Threshold parse, located at the string.
    check_error(
        &format!("thresholds = [\"p99<50ms\", \"p99<50\"]\n{EXEC}"),
        1,
        27,
        "give a unit, e.g. p99<50ms",
    );
    // Scenario-level limits.
    check_error(&format!("retry_share = 0.9\n{EXEC}"), 1, 15, "retry_share");
    check_error(
        &format!("max_in_flight = 0\n{EXEC}"),
        1,
        17,
        "max_in_flight is 0",
    );
    check_error(
        &format!("max_in_flight = 100001\n{EXEC}"),
        1,
        17,
        "MAX_IN_FLIGHT_MAX",
    );
    check_error(&format!("name = \"\"\n{EXEC}"), 1, 8, "name is empty");
}

#[test]
fn columns_count_characters_not_bytes() {
    check_error(
        &format!("name = \"é\" \nretry_share = 2\n{EXEC}"),
        2,
        15,
        "retry_share",
    );
    check_error(
        "# café\n[executor]\nkind = \"constant-arrival-rate\"\nrate = 10\nduration = \"0s\" # é\n",
        5,
        12,
        "duration is 0",
    );
}

#[test]
fn builtins() {
    let payments = builtin("payments", 200.0, Duration::from_secs(60)).expect("known");
    assert_eq!(payments.name, "payments");
    assert_eq!(payments.mix, Mix::payments());
    assert_eq!(
        payments.mix.entries(),
        &[
            (Flow::AutoCapture, 80),
            (Flow::ManualCapture, 10),
            (Flow::Decline, 5),
            (Flow::PartialRefund, 5)
        ]
    );
    assert_eq!(
        payments.executor,
        Executor::ConstantArrivalRate {
            rate: 200.0,
            duration: Duration::from_secs(60)
        }
    );
    assert_eq!(payments.retry_share, RETRY_SHARE_DEFAULT);
    assert_eq!(payments.max_in_flight, MAX_IN_FLIGHT_DEFAULT);
    assert_eq!(payments.validate(), Ok(()));

    let noop = builtin("noop", 1000.0, Duration::from_secs(5)).expect("known");
    assert_eq!(noop.mix.entries(), &[(Flow::Noop, 1)]);
    assert_eq!(noop.mix.share(Flow::Noop), 1.0);
    assert_eq!(noop.retry_share, 0.0);
    assert_eq!(noop.validate(), Ok(()));

    assert!(builtin("checkout", 1.0, Duration::from_secs(1)).is_none());
    assert!(
        builtin("payments", 0.0, Duration::from_secs(1))
            .expect("known")
            .validate()
            .is_err()
    );
}

#[test]
fn mix_picks_in_proportion() {
    let mix = Mix::payments();
    assert_eq!(mix.share(Flow::AutoCapture), 0.8);
    assert_eq!(mix.share(Flow::Noop), 0.0);
    let mut counts = std::collections::HashMap::new();
    let draws = 10_000;
    for i in 0..draws {
        *counts
            .entry(mix.pick(i as f64 / draws as f64))
            .or_insert(0u32) += 1;
    }
    assert_eq!(counts[&Flow::AutoCapture], 8000);
    assert_eq!(counts[&Flow::ManualCapture], 1000);
    assert_eq!(counts[&Flow::Decline], 500);
    assert_eq!(counts[&Flow::PartialRefund], 500);
    // Out-of-range draws are clamped, never a panic.
    assert_eq!(mix.pick(-1.0), Flow::AutoCapture);
    assert_eq!(mix.pick(1.0), Flow::PartialRefund);
    assert_eq!(mix.pick(f64::NAN), Flow::AutoCapture);
    // Zero weights are never picked.
    let skip = Mix::new(vec![(Flow::Decline, 0), (Flow::Noop, 3)]).expect("valid");
    assert_eq!(skip.pick(0.0), Flow::Noop);

    assert!(Mix::new(vec![]).is_err());
    assert!(Mix::new(vec![(Flow::Noop, 0)]).is_err());
    assert!(
        Mix::new(vec![(Flow::Noop, 1), (Flow::Noop, 2)])
            .unwrap_err()
            .contains("twice")
    );
    assert!(Mix::new(vec![(Flow::Noop, u32::MAX), (Flow::Decline, u32::MAX)]).is_err());
}

#[test]
fn operations_have_stable_names() {
    let names: Vec<String> = Operation::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "create", "confirm", "capture", "refund", "retrieve", "healthz"
        ]
    );
    assert_eq!("capture".parse::<Operation>(), Ok(Operation::Capture));
    assert_eq!(
        serde_json::to_string(&Flow::PartialRefund).expect("json"),
        "\"partial_refund\""
    );
    assert_eq!(
        serde_json::to_string(&Operation::Healthz).expect("json"),
        "\"healthz\""
    );
}
