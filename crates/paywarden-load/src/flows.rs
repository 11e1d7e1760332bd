//! The payment flows of the `payments` scenario, as HTTP requests with checks in flight.
//!
//! Every POST carries an Idempotency-Key unique to the run, the iteration and the step. A
//! share of POSTs (`retry_share`) is deliberately sent a second time with the same key, as a
//! client that lost the answer would; the retry must be replayed (`Idempotent-Replayed: true`)
//! with the same object. Every response is checked: status, object shape, the state the flow
//! expects. What a flow created is remembered (bounded) so the run can retrieve it at the end
//! and compare it with the state it should be in.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scenario::{Flow, Operation};

/// Amounts cycle through this many values (minor units of USD, 10.00 to 59.99).
const AMOUNT_BASE: u64 = 1000;
const AMOUNT_SPREAD: u64 = 5000;

/// What a finished flow left behind, to be verified at the end of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub intent: String,
    pub status: &'static str,
    pub amount_received: u64,
    pub amount_refunded: u64,
}

/// One request's outcome, for the recorder.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub op: Operation,
    pub latency: Duration,
    pub error: Option<&'static str>,
}

/// The HTTP side of a run: a client, the target and the key.
pub struct Target {
    pub client: crate::http::Client,
    pub base: String,
    pub key: String,
    pub run_id: String,
}

/// One POST of a flow and the status it must get.
struct Post<'a> {
    op: Operation,
    path: &'a str,
    form: &'a [(&'a str, String)],
    key: &'a str,
    expect: u16,
}

struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

impl Target {
    async fn send(&self, path: &str, form: Option<&[(&str, String)]>, idem: Option<&str>) -> Result<Answer, &'static str> {
        let form = match form {
            Some(f) => Some(serde_urlencoded::to_string(f).map_err(|_| "body")?),
            None => None,
        };
        let res = self.client.send(path, form, idem).await?;
        let body = if path == "/healthz" { Value::Null } else { serde_json::from_slice(&res.body).map_err(|_| "body")? };
        Ok(Answer { status: res.status, replayed: res.replayed, body })
    }

    /// Sends a POST (and, if `retry`, the same POST again), checks the status, returns the body.
    async fn post(&self, p: Post<'_>, retry: bool, since: Instant, out: &mut Vec<Timed>) -> Option<Value> {
        let Post { op, path, form, key, expect } = p;
        let a = self.send(path, Some(form), Some(key)).await;
        let latency = since.elapsed();
        let a = match a {
            Ok(a) => a,
            Err(kind) => {
                out.push(Timed { op, latency, error: Some(kind) });
                return None;
            }
        };
        if a.status != expect {
            out.push(Timed { op, latency, error: Some(status_kind(a.status)) });
            return None;
        }
        out.push(Timed { op, latency, error: None });
        if retry {
            let started = Instant::now();
            let again = self.send(path, Some(form), Some(key)).await;
            let latency = started.elapsed();
            let error = match &again {
                Err(kind) => Some(*kind),
                Ok(b) if b.status != a.status || !b.replayed || b.body.get("id") != a.body.get("id") => Some("check"),
                Ok(_) => None,
            };
            out.push(Timed { op, latency, error });
        }
        Some(a.body)
    }

    /// One `GET /healthz`, timed from `scheduled`. A future of its own, much smaller than
    /// [`Target::run`]'s: at the generator's top rates moving large futures into their tasks
    /// was a visible share of its CPU.
    pub async fn noop(&self, scheduled: Instant) -> Timed {
        let error = match self.client.send("/healthz", None, None).await {
            Err(kind) => Some(kind),
            Ok(a) if a.status != 200 => Some(status_kind(a.status)),
            Ok(_) => None,
        };
        Timed { op: Operation::Healthz, latency: scheduled.elapsed(), error }
    }

    /// Runs one iteration of `flow`. `scheduled` is when it should have started: the first
    /// request's latency counts from there (no coordinated omission); later requests of the
    /// flow, which depend on the first, count from when they were sent.
    pub async fn run(&self, flow: Flow, n: u64, scheduled: Instant, retry: bool, out: &mut Vec<Timed>) -> Option<Expected> {
        if flow == Flow::Noop {
            out.push(self.noop(scheduled).await);
            return None;
        }
        let amount = AMOUNT_BASE + n % AMOUNT_SPREAD;
        let pm = if flow == Flow::Decline { "pm_card_chargeDeclined" } else { "pm_card_visa" };
        let mut form = vec![("amount", amount.to_string()), ("currency", "usd".to_string()), ("payment_method", pm.to_string())];
        if flow == Flow::ManualCapture {
            form.push(("capture_method", "manual".to_string()));
        }
        let key = |step: &str| format!("{}-{n}-{step}", self.run_id);
        let created = self.post(Post { op: Operation::Create, path: "/v1/payment_intents", form: &form, key: &key("create"), expect: 200 }, retry, scheduled, out).await?;
        let Some(id) = created["id"].as_str().filter(|i| i.starts_with("pi_")).map(str::to_string) else {
            mark_check_failed(out);
            return None;
        };
        if created["status"] != "requires_confirmation" || created["amount"] != amount {
            mark_check_failed(out);
        }
        let confirm_path = format!("/v1/payment_intents/{id}/confirm");
        let now = Instant::now();
        if flow == Flow::Decline {
            // 402 with the intent back in requires_payment_method and the decline code.
            self.post(Post { op: Operation::Confirm, path: &confirm_path, form: &[], key: &key("confirm"), expect: 402 }, false, now, out).await;
            return Some(Expected { intent: id, status: "requires_payment_method", amount_received: 0, amount_refunded: 0 });
        }
        let confirmed = self.post(Post { op: Operation::Confirm, path: &confirm_path, form: &[], key: &key("confirm"), expect: 200 }, retry, now, out).await?;
        let want = if flow == Flow::ManualCapture { "requires_capture" } else { "succeeded" };
        if confirmed["status"] != want {
            mark_check_failed(out);
            return None;
        }
        match flow {
            Flow::ManualCapture => {
                let path = format!("/v1/payment_intents/{id}/capture");
                let captured = self.post(Post { op: Operation::Capture, path: &path, form: &[], key: &key("capture"), expect: 200 }, retry, Instant::now(), out).await?;
                if captured["status"] != "succeeded" || captured["amount_received"] != amount {
                    mark_check_failed(out);
                }
                Some(Expected { intent: id, status: "succeeded", amount_received: amount, amount_refunded: 0 })
            }
            Flow::PartialRefund => {
                let half = amount / 2;
                let form = [("payment_intent", id.clone()), ("amount", half.to_string())];
                let refund = self.post(Post { op: Operation::Refund, path: "/v1/refunds", form: &form, key: &key("refund"), expect: 200 }, retry, Instant::now(), out).await?;
                if refund["status"] != "succeeded" || refund["amount"] != half {
                    mark_check_failed(out);
                }
                Some(Expected { intent: id, status: "succeeded", amount_received: amount, amount_refunded: half })
            }
            _ => Some(Expected { intent: id, status: "succeeded", amount_received: amount, amount_refunded: 0 }),
        }
    }

    /// Retrieves an intent and compares it with what its flow left; `None` if it could not
    /// be read, `Some(matches)` otherwise.
    pub async fn verify(&self, e: &Expected, out: &mut Vec<Timed>) -> Option<bool> {
        let started = Instant::now();
        let a = self.send(&format!("/v1/payment_intents/{}", e.intent), None, None).await;
        let latency = started.elapsed();
        match a {
            Ok(a) if a.status == 200 => {
                out.push(Timed { op: Operation::Retrieve, latency, error: None });
                let b = &a.body;
                let mut ok = b["status"] == e.status && b["amount_received"] == e.amount_received;
                if e.amount_refunded > 0 {
                    // The charge records the refund; the intent's amount_received does not move.
                    ok &= b["latest_charge"].is_string();
                }
                Some(ok)
            }
            Ok(a) => {
                out.push(Timed { op: Operation::Retrieve, latency, error: Some(status_kind(a.status)) });
                Some(false)
            }
            Err(kind) => {
                out.push(Timed { op: Operation::Retrieve, latency, error: Some(kind) });
                None
            }
        }
    }
}

fn status_kind(status: u16) -> &'static str {
    match status {
        500..=599 => "status_5xx",
        400..=499 => "status_4xx",
        _ => "unexpected_status",
    }
}

/// Marks the last request as failing its check (the answer came, but not the right one).
fn mark_check_failed(out: &mut [Timed]) {
    if let Some(last) = out.last_mut() {
        last.error = Some("check");
    }
}
