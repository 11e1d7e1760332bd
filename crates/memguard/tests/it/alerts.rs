//! The alert book (de-duplication, bounds, fingerprints), the Alertmanager webhook payload,
//! and (feature `sampler`) its delivery to a local receiver.

use std::collections::BTreeMap;

use memguard::alerts::{
    ACTIVE_MAX, AlertBook, AlertEvent, AlertStatus, ENDS_AT_UNSET, EVENTS_MAX_DEFAULT,
    WebhookMessage, fingerprint, rfc3339_millis,
};
use serde_json::{Value, json};

/// 2024-08-12T09:00:00Z in unix milliseconds.
const INCIDENT_MS: u64 = 1_723_453_200_000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn fire(book: &mut AlertBook, at_ms: u64, name: &str) -> Option<AlertEvent> {
    book.set(at_ms, name, &[("service", "paywarden")], &[], true)
}

fn resolve(book: &mut AlertBook, at_ms: u64, name: &str) -> Option<AlertEvent> {
    book.set(at_ms, name, &[("service", "paywarden")], &[], false)
}

#[test]
fn firing_twice_is_one_event_and_updates_the_annotations() {
    let mut book = AlertBook::default();
    let first = book
        .set(
            1_000,
            "MemoryLeak",
            &[("severity", "page")],
            &[("summary", "12 MiB/min")],
            true,
        )
        .expect("first firing is an event");
    assert_eq!(first.seq, 1);
    assert_eq!(first.status, AlertStatus::Firing);
    assert_eq!(first.alert.starts_at_ms, 1_000);
    assert_eq!(first.alert.ends_at_ms, None);
    assert_eq!(
        first.alert.labels,
        labels(&[("alertname", "MemoryLeak"), ("severity", "page")])
    );
    // Stated again, with a new description: no event, the active alert follows.
    let summary = format!("{} MiB/min", 20);
    let again = book.set(
        2_000,
        "MemoryLeak",
        &[("severity", "page")],
        &[("summary", &summary)],
        true,
    );
    assert_eq!(again, None);
    // And with no annotations: they are kept.
    assert_eq!(
        book.set(3_000, "MemoryLeak", &[("severity", "page")], &[], true),
        None
    );
    assert_eq!(book.events().count(), 1);
    let active: Vec<_> = book.active().collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].starts_at_ms, 1_000);
    assert_eq!(active[0].annotations["summary"], "20 MiB/min");
}

#[test]
fn resolving_is_one_resolved_event_with_its_end_time() {
    let mut book = AlertBook::default();
    fire(&mut book, 1_000, "MemoryLeak").expect("fires");
    let resolved = resolve(&mut book, 61_000, "MemoryLeak").expect("resolves");
    assert_eq!(resolved.seq, 2);
    assert_eq!(resolved.at_ms, 61_000);
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.alert.status(), AlertStatus::Resolved);
    assert_eq!(resolved.alert.starts_at_ms, 1_000);
    assert_eq!(resolved.alert.ends_at_ms, Some(61_000));
    assert_eq!(book.active().count(), 0);
    // Resolving again is not news.
    assert_eq!(resolve(&mut book, 62_000, "MemoryLeak"), None);
    // Firing again is a new alert with a new start.
    let refired = fire(&mut book, 70_000, "MemoryLeak").expect("fires again");
    assert_eq!((refired.seq, refired.alert.starts_at_ms), (3, 70_000));
    let statuses: Vec<_> = book.events().map(|e| (e.seq, e.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (1, AlertStatus::Firing),
            (2, AlertStatus::Resolved),
            (3, AlertStatus::Firing)
        ]
    );
    assert_eq!(
        book.events_since(1).map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(book.events_since(3).count(), 0);
    assert_eq!(book.last_seq(), 3);
}

#[test]
fn resolving_an_unknown_alert_is_nothing() {
    let mut book = AlertBook::default();
    assert_eq!(resolve(&mut book, 1_000, "MemoryLeak"), None);
    fire(&mut book, 1_000, "MemoryLeak").expect("fires");
    // Same name, other labels: another alert, not active.
    assert_eq!(
        book.set(2_000, "MemoryLeak", &[("service", "other")], &[], false),
        None
    );
    assert_eq!(book.events().count(), 1);
    assert_eq!(book.active().count(), 1);
}

#[test]
fn a_clock_that_went_back_resolves_at_the_start() {
    let mut book = AlertBook::default();
    fire(&mut book, 5_000, "MemoryLeak").expect("fires");
    let resolved = resolve(&mut book, 4_000, "MemoryLeak").expect("resolves");
    assert_eq!(resolved.at_ms, 4_000);
    assert_eq!(resolved.alert.ends_at_ms, Some(5_000));
}

#[test]
fn history_is_bounded_and_keeps_the_newest() {
    let mut book = AlertBook::new(4);
    assert_eq!(book.events_max(), 4);
    for i in 0..5u64 {
        fire(&mut book, i * 10, "PaymentFailures").expect("fires");
        resolve(&mut book, i * 10 + 5, "PaymentFailures").expect("resolves");
    }
    let seqs: Vec<_> = book.events().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    // A poller that last saw 2 missed 3..=6: the gap shows it.
    assert_eq!(book.events_since(2).next().map(|e| e.seq), Some(7));
    assert_eq!(AlertBook::default().events_max(), EVENTS_MAX_DEFAULT);
    assert_eq!(AlertBook::new(0).events_max(), 1);
    assert!(AlertBook::new(usize::MAX).events_max() <= memguard::alerts::EVENTS_MAX_LIMIT);
}

#[test]
fn active_alerts_are_bounded_and_the_rest_counted_as_dropped() {
    let mut book = AlertBook::default();
    let pods: Vec<String> = (0..ACTIVE_MAX + 3).map(|i| format!("pod-{i}")).collect();
    let mut events = 0;
    for pod in &pods {
        events += usize::from(
            book.set(1_000, "MemoryLeak", &[("pod", pod)], &[], true)
                .is_some(),
        );
    }
    assert_eq!(events, ACTIVE_MAX);
    assert_eq!(book.active().count(), ACTIVE_MAX);
    assert_eq!(book.dropped(), 3);
    // An active alert still resolves, which makes room for a new one.
    assert!(
        book.set(2_000, "MemoryLeak", &[("pod", "pod-0")], &[], false)
            .is_some()
    );
    let last = &pods[ACTIVE_MAX];
    assert!(
        book.set(3_000, "MemoryLeak", &[("pod", last)], &[], true)
            .is_some()
    );
    assert_eq!(book.active().count(), ACTIVE_MAX);
    let view = book.view();
    assert_eq!(view.active.len(), ACTIVE_MAX);
    assert_eq!(view.dropped, 3);
    let json = serde_json::to_value(&view).expect("serializes");
    assert_eq!(json["dropped"], 3);
    assert_eq!(json["events"][0]["status"], "firing");
    assert_eq!(json["events"][0]["seq"], 1);
    assert_eq!(json["active"][0]["labels"]["alertname"], "MemoryLeak");
}

#[test]
fn fingerprint_matches_prometheus() {
    // Prometheus' own test vectors (prometheus/common, model: TestMetricToFingerprint): the
    // empty set hashes to the FNV-1a 64 offset basis, 14695981039346656037, and
    // {name="garland, briggs", fear="love is not enough"} to 5799056148416392346, which is
    // 0x507a62d79ee76c9a.
    assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    assert_eq!(
        fingerprint(&labels(&[
            ("name", "garland, briggs"),
            ("fear", "love is not enough")
        ])),
        "507a62d79ee76c9a"
    );
    assert_eq!(
        u64::from_str_radix("507a62d79ee76c9a", 16),
        Ok(5_799_056_148_416_392_346)
    );
}

/// The fingerprint of a new alert `name` with `labels`, fired in `book`.
fn fired_print(book: &mut AlertBook, name: &str, labels: &[(&str, &str)]) -> String {
    book.set(0, name, labels, &[], true)
        .expect("a new alert fires")
        .alert
        .fingerprint
}

#[test]
fn fingerprint_ignores_label_order_and_sees_every_label() {
    let mut a = AlertBook::default();
    let mut b = AlertBook::default();
    let one = fired_print(&mut a, "MemoryLeak", &[("pod", "a"), ("severity", "page")]);
    let two = fired_print(&mut b, "MemoryLeak", &[("severity", "page"), ("pod", "a")]);
    assert_eq!(one, two);
    assert_eq!(one.len(), 16);
    assert!(
        one.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    let active = a.active().next().expect("active");
    assert_eq!(one, fingerprint(&active.labels));
    // Any difference in a value, a name or the alert's name changes it.
    let other_value = fired_print(&mut a, "MemoryLeak", &[("pod", "b"), ("severity", "page")]);
    let other_name = fired_print(&mut a, "MemoryLeak", &[("node", "a"), ("severity", "page")]);
    let other_alert = fired_print(&mut a, "HeapGrowth", &[("pod", "a"), ("severity", "page")]);
    let prints = [&one, &other_value, &other_name, &other_alert];
    for (i, x) in prints.iter().enumerate() {
        for y in &prints[i + 1..] {
            assert_ne!(x, y);
        }
    }
    // The separator keeps a name's end from sliding into its value.
    assert_ne!(
        fingerprint(&labels(&[("ab", "c")])),
        fingerprint(&labels(&[("a", "bc")]))
    );
}

#[test]
fn times_are_rfc3339_with_millis_in_utc() {
    assert_eq!(rfc3339_millis(INCIDENT_MS), "2024-08-12T09:00:00.000Z");
    assert_eq!(
        rfc3339_millis(INCIDENT_MS + 1_234),
        "2024-08-12T09:00:01.234Z"
    );
    assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    // Past year 9999: the last representable time, not a panic.
    assert_eq!(rfc3339_millis(u64::MAX), "9999-12-31T23:59:59.999Z");
}

fn leak_book() -> (AlertBook, AlertEvent) {
    let mut book = AlertBook::default();
    let fired = book
        .set(
            INCIDENT_MS,
            "MemoryLeak",
            &[("service", "paywarden"), ("severity", "page")],
            &[("summary", "heap grows 4 KiB per request")],
            true,
        )
        .expect("fires");
    (book, fired)
}

#[test]
fn a_firing_message_is_alertmanagers_webhook_payload() {
    let (_, fired) = leak_book();
    let msg = WebhookMessage::from_event(&fired, "paywarden", "http://paywarden.internal:8080");
    let json = serde_json::to_value(&msg).expect("serializes");
    let fp = fingerprint(&labels(&[
        ("alertname", "MemoryLeak"),
        ("service", "paywarden"),
        ("severity", "page"),
    ]));
    assert_eq!(
        json,
        json!({
            "receiver": "paywarden",
            "status": "firing",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "MemoryLeak", "service": "paywarden", "severity": "page"},
                "annotations": {"summary": "heap grows 4 KiB per request"},
                "startsAt": "2024-08-12T09:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://paywarden.internal:8080",
                "fingerprint": fp,
            }],
            "groupLabels": {"alertname": "MemoryLeak"},
            "commonLabels": {"alertname": "MemoryLeak", "service": "paywarden", "severity": "page"},
            "commonAnnotations": {"summary": "heap grows 4 KiB per request"},
            "externalURL": "http://paywarden.internal:8080",
            "version": "4",
            "groupKey": "{}:{alertname=\"MemoryLeak\"}",
            "truncatedAlerts": 0,
        })
    );
    assert_eq!(json["alerts"][0]["endsAt"], ENDS_AT_UNSET);
    // It reads back as itself.
    let back: WebhookMessage = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, msg);
}

#[test]
fn a_resolved_message_has_its_end_time() {
    let (mut book, fired) = leak_book();
    let resolved = book
        .set(
            INCIDENT_MS + 300_250,
            "MemoryLeak",
            &[("severity", "page"), ("service", "paywarden")],
            &[],
            false,
        )
        .expect("resolves");
    let msg = WebhookMessage::from_event(&resolved, "ops", "http://paywarden.internal:8080/");
    let json = serde_json::to_value(&msg).expect("serializes");
    assert_eq!(json["version"], "4");
    assert_eq!(json["status"], "resolved");
    assert_eq!(json["receiver"], "ops");
    assert_eq!(json["truncatedAlerts"], 0);
    let alert = &json["alerts"][0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["startsAt"], "2024-08-12T09:00:00.000Z");
    assert_eq!(alert["endsAt"], "2024-08-12T09:05:00.250Z");
    assert_eq!(alert["fingerprint"], Value::from(fired.alert.fingerprint));
    // The description it fired with is kept when the resolution gives none.
    assert_eq!(
        alert["annotations"]["summary"],
        "heap grows 4 KiB per request"
    );
    assert_eq!(json["commonAnnotations"], alert["annotations"]);
}

#[test]
fn a_group_key_quotes_the_name_as_go_does() {
    let mut book = AlertBook::default();
    let fired = book
        .set(0, "odd \"name\" \\", &[], &[], true)
        .expect("fires");
    let msg = WebhookMessage::from_event(&fired, "r", "http://x");
    assert_eq!(msg.group_key, r#"{}:{alertname="odd \"name\" \\"}"#);
}

/// Delivery to a receiver on 127.0.0.1. Waits are bounded (10 s) to fail rather than hang;
/// nothing asserts on how long delivery takes.
#[cfg(feature = "sampler")]
mod notifier {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use memguard::alerts::{AlertBook, WebhookMessage};
    use memguard::notify::{NotifierStats, WebhookConfig, WebhookNotifier};
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Most bytes of request head the receiver reads before giving up on a request.
    const HEAD_BYTES_MAX: usize = 64 * 1024;

    /// One request as the receiver read it.
    #[derive(Debug, Clone)]
    struct Received {
        /// Request line and headers.
        head: String,
        body: Vec<u8>,
    }

    impl Received {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("the body is JSON")
        }
    }

    /// A webhook receiver answering its n-th request with `statuses[n]` (the last one after
    /// the end), one connection at a time.
    struct Receiver {
        addr: SocketAddr,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Receiver {
        async fn start(statuses: Vec<u16>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let received = Arc::new(Mutex::new(Vec::new()));
            let log = Arc::clone(&received);
            tokio::spawn(async move {
                let mut served = 0usize;
                while let Ok((mut stream, _)) = listener.accept().await {
                    let Some(request) = read_request(&mut stream).await else {
                        continue;
                    };
                    let status = statuses
                        .get(served)
                        .or(statuses.last())
                        .copied()
                        .unwrap_or(200);
                    served += 1;
                    log.lock().expect("lock").push(request);
                    let answer = format!(
                        "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
            Self { addr, received }
        }

        fn url(&self) -> String {
            format!("http://{}/alerts", self.addr)
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().expect("lock").clone()
        }
    }

    /// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
    async fn read_request(stream: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > HEAD_BYTES_MAX {
                return None;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = buf.split_off(head_end);
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Some(Received { head, body })
    }

    fn config(url: String) -> WebhookConfig {
        WebhookConfig {
            receiver: "test".to_owned(),
            timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(2),
            backoff_max: Duration::from_millis(8),
            ..WebhookConfig::new(url)
        }
    }

    /// One message per event: `MemoryLeak` firing, resolved, firing again.
    fn messages() -> Vec<WebhookMessage> {
        let mut book = AlertBook::default();
        [(1_000, true), (2_000, false), (3_000, true)]
            .into_iter()
            .filter_map(|(at, firing)| {
                book.set(at, "MemoryLeak", &[("service", "paywarden")], &[], firing)
            })
            .map(|e| WebhookMessage::from_event(&e, "test", "http://paywarden.test"))
            .collect()
    }

    async fn until(
        notifier: &WebhookNotifier,
        done: impl Fn(&NotifierStats) -> bool,
    ) -> NotifierStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = notifier.stats();
            if done(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn posts_the_message_as_json() {
        let receiver = Receiver::start(vec![200]).await;
        let notifier = WebhookNotifier::spawn(config(receiver.url())).expect("valid");
        let msg = messages().remove(0);
        assert!(notifier.notify(msg.clone()));
        let stats = until(&notifier, |s| s.sent == 1).await;
        assert_eq!(
            stats,
            NotifierStats {
                queued: 1,
                sent: 1,
                failed: 0,
                dropped: 0,
                attempts: 1
            }
        );
        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let head = received[0].head.to_ascii_lowercase();
        assert!(head.starts_with("post /alerts http/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{head}"
        );
        let json = received[0].json();
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["receiver"], "test");
        assert_eq!(json["groupKey"], "{}:{alertname=\"MemoryLeak\"}");
        assert_eq!(json["externalURL"], "http://paywarden.test");
        assert_eq!(json["alerts"][0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(json["alerts"][0]["labels"]["alertname"], "MemoryLeak");
        assert_eq!(
            json["alerts"][0]["fingerprint"],
            Value::from(msg.alerts[0].fingerprint.clone())
        );
        let back: WebhookMessage = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, msg);
        notifier.shutdown().await;
    }

    #[tokio::test]
    async fn delivers_in_order() {
        let receiver = Receiver::start(vec![200]).await;
        let notifier = WebhookNotifier::spawn(config(receiver.url())).expect("valid");
        for msg in messages() {
            assert!(notifier.notify(msg));
        }
        // Shutdown drains the queue.
        notifier.shutdown().await;
        let statuses: Vec<_> = receiver
            .received()
            .iter()
            .map(|r| r.json()["status"].as_str().map(str::to_owned))
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(statuses, vec![s("firing"), s("resolved"), s("firing")]);
    }

    #[tokio::test]
    async fn retries_until_the_receiver_takes_it() {
        let receiver = Receiver::start(vec![500, 500, 200]).await;
        let notifier = WebhookNotifier::spawn(config(receiver.url())).expect("valid");
        assert!(notifier.notify(messages().remove(0)));
        let stats = until(&notifier, |s| s.sent + s.failed == 1).await;
        assert_eq!((stats.sent, stats.failed, stats.attempts), (1, 0, 3));
        let received = receiver.received();
        assert_eq!(received.len(), 3);
        // The same body every time.
        assert!(received.iter().all(|r| r.body == received[0].body));
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_but_throttling_is() {
        let receiver = Receiver::start(vec![400]).await;
        let notifier = WebhookNotifier::spawn(config(receiver.url())).expect("valid");
        assert!(notifier.notify(messages().remove(0)));
        let stats = until(&notifier, |s| s.sent + s.failed == 1).await;
        assert_eq!((stats.sent, stats.failed, stats.attempts), (0, 1, 1));

        let receiver = Receiver::start(vec![429, 408, 200]).await;
        let notifier = WebhookNotifier::spawn(config(receiver.url())).expect("valid");
        assert!(notifier.notify(messages().remove(0)));
        let stats = until(&notifier, |s| s.sent + s.failed == 1).await;
        assert_eq!((stats.sent, stats.failed, stats.attempts), (1, 0, 3));
    }

    #[tokio::test]
    async fn gives_up_after_attempts_max() {
        let receiver = Receiver::start(vec![503]).await;
        let notifier = WebhookNotifier::spawn(WebhookConfig {
            attempts_max: 3,
            ..config(receiver.url())
        })
        .expect("valid");
        assert!(notifier.notify(messages().remove(0)));
        let stats = until(&notifier, |s| s.sent + s.failed == 1).await;
        assert_eq!((stats.sent, stats.failed, stats.attempts), (0, 1, 3));
        assert_eq!(receiver.received().len(), 3);
        // The next message is still delivered (and fails the same way).
        assert!(notifier.notify(messages().remove(1)));
        let stats = until(&notifier, |s| s.failed == 2).await;
        assert_eq!(stats.attempts, 6);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failed_attempt() {
        // Bind a port, then free it: nothing listens there.
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("address")
        };
        let notifier = WebhookNotifier::spawn(WebhookConfig {
            attempts_max: 2,
            ..config(format!("http://{addr}/"))
        })
        .expect("valid");
        assert!(notifier.notify(messages().remove(0)));
        let stats = until(&notifier, |s| s.failed == 1).await;
        assert_eq!((stats.sent, stats.attempts), (0, 2));
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        // Accepts connections (the kernel's backlog) but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", silent.local_addr().expect("address"));
        let notifier = WebhookNotifier::spawn(WebhookConfig {
            attempts_max: 1,
            timeout: Duration::from_secs(5),
            queue_max: 1,
            ..config(url)
        })
        .expect("valid");
        let mut msgs = messages().into_iter();
        let mut next = || msgs.next().expect("three messages");
        assert!(notifier.notify(next()));
        // The first is in flight (waiting for an answer that never comes)...
        until(&notifier, |s| s.attempts == 1).await;
        // ...the second fills the queue, the third finds it full.
        assert!(notifier.notify(next()));
        assert!(!notifier.notify(next()));
        let stats = notifier.stats();
        assert_eq!(
            (stats.queued, stats.dropped, stats.sent, stats.failed),
            (2, 1, 0, 0)
        );
        drop(silent);
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_do() {
        let ok = WebhookConfig::new("http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(ok.validate(), Ok(()));
        let field = |c: WebhookConfig| c.validate().map_err(|e| e.field);
        let https = WebhookConfig::new("https://alertmanager:9093/");
        let err = https.validate().expect_err("no TLS here");
        assert_eq!(err.field, "url");
        assert!(err.problem.contains("TLS"), "{err}");
        assert_eq!(field(WebhookConfig::new("")), Err("url"));
        assert_eq!(field(WebhookConfig::new("ftp://host/")), Err("url"));
        let zero_attempts = WebhookConfig {
            attempts_max: 0,
            ..ok.clone()
        };
        assert_eq!(field(zero_attempts.clone()), Err("attempts_max"));
        let zero_queue = WebhookConfig {
            queue_max: 0,
            ..ok.clone()
        };
        assert_eq!(field(zero_queue), Err("queue_max"));
        let zero_timeout = WebhookConfig {
            timeout: Duration::ZERO,
            ..ok.clone()
        };
        assert_eq!(field(zero_timeout), Err("timeout"));
        let backwards = WebhookConfig {
            backoff_max: Duration::from_millis(1),
            ..ok.clone()
        };
        assert_eq!(field(backwards), Err("backoff_max"));
        // spawn checks too.
        let err = WebhookNotifier::spawn(https).expect_err("refused");
        assert_eq!(err.field, "url");
        let err = WebhookNotifier::spawn(zero_attempts).expect_err("refused");
        assert_eq!(err.field, "attempts_max");
    }

    #[test]
    fn spawn_outside_a_runtime_is_an_error() {
        let err = WebhookNotifier::spawn(WebhookConfig::new("http://127.0.0.1:9/"))
            .expect_err("no runtime");
        assert_eq!(err.field, "runtime");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c = WebhookConfig::default();
        let ms = |n| c.backoff(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5), ms(6), ms(40)],
            [500, 1000, 2000, 4000, 8000, 8000, 8000]
        );
    }
}
