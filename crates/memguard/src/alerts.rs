//! Alerts as events: a book of active alerts that turns "is this condition true now?",
//! asked over and over, into the few firing and resolved transitions a human wants to be told
//! about, and the Alertmanager webhook payload that tells them.
//!
//! **Pure (sans-I/O).** Nothing here reads a clock or touches the network: every time is
//! passed in as unix milliseconds, and delivery is the `notify` module's job (feature
//! `sampler`). The service decides *what* is wrong (the leak detector's state, the burn-rate
//! alert's); the book decides *when that is news*.
//!
//! # De-duplication
//!
//! An alert is identified by its label set, which always includes `alertname` (Prometheus'
//! and Alertmanager's identity: two alerts with the same name and different labels are two
//! alerts). The caller states each condition as often as it likes — once a second, after
//! every sample — with [`AlertBook::set`], and only a change of state is an event:
//!
//! | stated | alert was | event | effect |
//! |---|---|---|---|
//! | firing | not active | [`AlertStatus::Firing`], `starts_at_ms` = now | becomes active |
//! | firing | active | none | annotations updated (if any are given) |
//! | not firing | active | [`AlertStatus::Resolved`], `ends_at_ms` = now | no longer active |
//! | not firing | not active | none | none |
//!
//! So a leak that stays `leaking` for an hour is one page when it starts and one when it
//! ends, not 3600; the annotations (the current rate, the time to exhaustion) still follow
//! the latest statement, for `GET /admin/alerts` and for the resolved message.
//!
//! # Bounds
//!
//! - **Active alerts**: at most [`ACTIVE_MAX`] (64). A new alert past that is refused — no
//!   event, not active — and counted in [`AlertBook::dropped`], once per refused statement.
//!   Alerts already active keep working, so a flood of new label sets cannot hide the
//!   resolution of an old one. 64 is far more than memguard's own alerts (a handful of
//!   names, label sets from fixed sets); reaching it means a caller puts unbounded values
//!   (ids, paths) in labels.
//! - **Event history**: the last `events_max` events ([`EVENTS_MAX_DEFAULT`] = 256, at most
//!   [`EVENTS_MAX_LIMIT`]) in a [`Ring`]; older ones are evicted. Every event has a sequence
//!   number (1, 2, …), so a poller passing the last one it saw to
//!   [`AlertBook::events_since`] sees what it missed, and a gap in the numbers shows what
//!   was evicted before it looked.
//!
//! # The webhook payload
//!
//! [`WebhookMessage`] is the JSON body Alertmanager POSTs to a webhook receiver (version
//! "4"), so anything that accepts Alertmanager's webhooks (chat bridges, incident tools, a
//! receiver you already run) accepts memguard's alerts without a running Alertmanager. One
//! event makes one message with one alert; `groupLabels` is `{alertname}`, `commonLabels` and
//! `commonAnnotations` are the alert's own.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ring::Ring;

/// Events the book keeps by default: hours of history for alerts that change a few times an
/// hour, at a few hundred bytes each.
pub const EVENTS_MAX_DEFAULT: usize = 256;

/// Most events a book may keep: the ring is allocated up front, so this bounds what a
/// mistaken `events_max` can reserve.
pub const EVENTS_MAX_LIMIT: usize = 65_536;

/// Most alerts active at once; new alerts past it are refused and counted as dropped.
pub const ACTIVE_MAX: usize = 64;

/// The label every alert carries, holding its name.
pub const ALERTNAME_LABEL: &str = "alertname";

/// The webhook payload version Alertmanager sends (and receivers check).
pub const WEBHOOK_VERSION: &str = "4";

/// What Alertmanager sends as `endsAt` for an alert that has not ended: Go's zero time.
pub const ENDS_AT_UNSET: &str = "0001-01-01T00:00:00Z";

/// The latest time RFC 3339 can write with a four-digit year (9999-12-31T23:59:59.999Z), in
/// unix milliseconds. Later times are written as this one rather than refused.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;

/// Prometheus' label separator: a byte that is never part of valid UTF-8, so no two
/// different label sets hash the same bytes.
const SEPARATOR: u8 = 0xff;

/// Whether an alert is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition held and no longer does.
    Resolved,
}

impl AlertStatus {
    /// "firing" or "resolved", as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert: a named condition with labels (its identity) and annotations (its description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The alert's name; also its `alertname` label.
    pub name: String,
    /// The labels, including `alertname` = `name`. Together they identify the alert.
    pub labels: BTreeMap<String, String>,
    /// Free-form descriptions (`summary`, `description`, …), as last stated.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, in unix milliseconds.
    pub starts_at_ms: u64,
    /// When it resolved, in unix milliseconds; `None` while firing.
    pub ends_at_ms: Option<u64>,
    /// [`fingerprint`] of `labels`: 16 lowercase hex digits, the same as Alertmanager's.
    pub fingerprint: String,
}

impl Alert {
    /// Firing while `ends_at_ms` is unset, resolved after.
    pub fn status(&self) -> AlertStatus {
        match self.ends_at_ms {
            None => AlertStatus::Firing,
            Some(_) => AlertStatus::Resolved,
        }
    }
}

/// A transition of one alert, as recorded in the book's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Position in the book's history: 1 for the first event, one more for each next.
    pub seq: u64,
    /// When the transition was stated, in unix milliseconds.
    pub at_ms: u64,
    /// Firing (it started) or resolved (it ended).
    pub status: AlertStatus,
    /// The alert as of the transition (`ends_at_ms` set on a resolved event).
    pub alert: Alert,
}

/// The fingerprint of a label set, as Prometheus' `LabelSet.Fingerprint()` computes it and
/// Alertmanager sends it: FNV-1a (64 bits) over the labels in order of name, each as its
/// name's bytes, 0xff, its value's bytes, 0xff; written as 16 lowercase hex digits. A
/// `BTreeMap` of `String`s iterates in byte order of the names, which is Go's `sort.Strings`
/// order, so the same labels give the same fingerprint here and there.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

/// `at_ms` as RFC 3339 in UTC with milliseconds ("2024-08-12T09:00:00.000Z"); times past
/// year 9999 are written as [`TIME_MS_MAX`] (RFC 3339 has four-digit years).
pub fn rfc3339_millis(at_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms.min(TIME_MS_MAX));
    humantime::format_rfc3339_millis(at).to_string()
}

/// The active alerts and the history of their transitions. See the module documentation for
/// what is an event and what is bounded.
#[derive(Debug, Clone)]
pub struct AlertBook {
    /// Active alerts in the order they started firing; at most [`ACTIVE_MAX`], so lookups
    /// are a scan.
    active: Vec<Alert>,
    events: Ring<AlertEvent>,
    /// Sequence number of the next event.
    next_seq: u64,
    dropped: u64,
}

impl Default for AlertBook {
    fn default() -> Self {
        Self::new(EVENTS_MAX_DEFAULT)
    }
}

impl AlertBook {
    /// A book keeping the last `events_max` events (0 is raised to 1, anything above
    /// [`EVENTS_MAX_LIMIT`] lowered to it; never panics).
    pub fn new(events_max: usize) -> Self {
        Self {
            active: Vec::with_capacity(ACTIVE_MAX),
            events: Ring::new(events_max.min(EVENTS_MAX_LIMIT)),
            next_seq: 1,
            dropped: 0,
        }
    }

    /// States whether the alert `name` with `labels` is firing at `at_ms` (unix
    /// milliseconds), and returns the event if that is a change (see the module
    /// documentation's table). `labels` need not include `alertname`: it is set to `name`,
    /// replacing any given; a name given twice keeps its last value. `annotations`, when any
    /// are given, replace the alert's; an empty list keeps the ones it has (so a resolution
    /// may pass none and keep the description it fired with).
    ///
    /// A resolved alert's `ends_at_ms` is never before its `starts_at_ms` (a clock that went
    /// back resolves it at its start: Alertmanager rejects an end before the start).
    pub fn set(
        &mut self,
        at_ms: u64,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
        firing: bool,
    ) -> Option<AlertEvent> {
        let labels = label_set(name, labels);
        let found = self.active.iter().position(|a| a.labels == labels);
        match (found, firing) {
            (None, false) => None,
            (Some(i), true) => {
                if !annotations.is_empty()
                    && let Some(alert) = self.active.get_mut(i)
                {
                    alert.annotations = string_map(annotations);
                }
                None
            }
            (None, true) => {
                if self.active.len() >= ACTIVE_MAX {
                    self.dropped = self.dropped.saturating_add(1);
                    return None;
                }
                let alert = Alert {
                    name: name.to_owned(),
                    fingerprint: fingerprint(&labels),
                    labels,
                    annotations: string_map(annotations),
                    starts_at_ms: at_ms,
                    ends_at_ms: None,
                };
                self.active.push(alert.clone());
                Some(self.record(at_ms, AlertStatus::Firing, alert))
            }
            (Some(i), false) => {
                let mut alert = self.active.remove(i);
                if !annotations.is_empty() {
                    alert.annotations = string_map(annotations);
                }
                alert.ends_at_ms = Some(at_ms.max(alert.starts_at_ms));
                Some(self.record(at_ms, AlertStatus::Resolved, alert))
            }
        }
    }

    /// The active (firing) alerts, in the order they started.
    pub fn active(&self) -> impl ExactSizeIterator<Item = &Alert> + '_ {
        self.active.iter()
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> impl DoubleEndedIterator<Item = &AlertEvent> + '_ {
        self.events.iter()
    }

    /// The events kept with a sequence number above `seq`, oldest first: pass the last
    /// `seq` seen (0 for all).
    pub fn events_since(&self, seq: u64) -> impl Iterator<Item = &AlertEvent> + '_ {
        self.events.iter().skip_while(move |e| e.seq <= seq)
    }

    /// The sequence number of the latest event, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Most events kept.
    pub fn events_max(&self) -> usize {
        self.events.capacity()
    }

    /// New alerts refused because [`ACTIVE_MAX`] were active, one per refused statement.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A copy of the book for an admin answer (`GET /admin/alerts`).
    pub fn view(&self) -> AlertsView {
        AlertsView {
            active: self.active.clone(),
            events: self.events.iter().cloned().collect(),
            dropped: self.dropped,
        }
    }

    fn record(&mut self, at_ms: u64, status: AlertStatus, alert: Alert) -> AlertEvent {
        let event = AlertEvent {
            seq: self.next_seq,
            at_ms,
            status,
            alert,
        };
        self.next_seq = self.next_seq.saturating_add(1);
        self.events.push(event.clone());
        event
    }
}

/// The book at one moment, for a JSON answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsView {
    /// Active alerts, in the order they started.
    pub active: Vec<Alert>,
    /// Events kept, oldest first.
    pub events: Vec<AlertEvent>,
    /// New alerts refused because the active set was full.
    pub dropped: u64,
}

/// The labels of alert `name`: `labels` plus `alertname` = `name`.
fn label_set(name: &str, labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut set = string_map(labels);
    set.insert(ALERTNAME_LABEL.to_owned(), name.to_owned());
    set
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The body Alertmanager POSTs to a webhook receiver (`webhook.Message`, version "4"). Fields
/// are in Alertmanager's order; the names are its JSON names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    /// The receiver's name (the one the route picked, in Alertmanager).
    pub receiver: String,
    /// Firing if any alert in the message is firing, else resolved.
    pub status: AlertStatus,
    /// The alerts.
    pub alerts: Vec<WebhookAlert>,
    /// The labels the alerts were grouped by.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert in the message has.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert in the message has.
    pub common_annotations: BTreeMap<String, String>,
    /// Link back to the sender (in Alertmanager, its own URL; here the service's).
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// Always [`WEBHOOK_VERSION`] ("4").
    pub version: String,
    /// Identifies the group, so a receiver can thread a group's messages:
    /// `{}:{alertname="…"}`, Alertmanager's form for the root route grouping by name.
    pub group_key: String,
    /// Alerts left out of the message for a size limit (always 0: one alert per message).
    pub truncated_alerts: u64,
}

/// One alert in a [`WebhookMessage`] (Alertmanager's `template.Alert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// The alert's labels, including `alertname`.
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started: RFC 3339, UTC, milliseconds ("2024-08-12T09:00:00.000Z").
    pub starts_at: String,
    /// When it ended, the same way; [`ENDS_AT_UNSET`] while firing, as Alertmanager sends.
    pub ends_at: String,
    /// Link to what produced the alert (here the `external_url` the message was built with).
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// The labels' [`fingerprint`].
    pub fingerprint: String,
}

impl WebhookAlert {
    /// `alert` in Alertmanager's shape.
    pub fn from_alert(alert: &Alert, generator_url: &str) -> Self {
        Self {
            status: alert.status(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: rfc3339_millis(alert.starts_at_ms),
            ends_at: alert
                .ends_at_ms
                .map_or_else(|| ENDS_AT_UNSET.to_owned(), rfc3339_millis),
            generator_url: generator_url.to_owned(),
            fingerprint: alert.fingerprint.clone(),
        }
    }
}

impl WebhookMessage {
    /// The message for one event: its alert alone, grouped by `alertname`, for `receiver`,
    /// linking back to `external_url` (the service's address; also used as each alert's
    /// `generatorURL`). The fields are public: change any before sending.
    pub fn from_event(event: &AlertEvent, receiver: &str, external_url: &str) -> Self {
        let alert = &event.alert;
        let group_labels = BTreeMap::from([(ALERTNAME_LABEL.to_owned(), alert.name.clone())]);
        let alerts = vec![WebhookAlert::from_alert(alert, external_url)];
        let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        Self {
            receiver: receiver.to_owned(),
            status,
            alerts,
            group_key: format!("{{}}:{{{ALERTNAME_LABEL}=\"{}\"}}", go_quoted(&alert.name)),
            group_labels,
            common_labels: alert.labels.clone(),
            common_annotations: alert.annotations.clone(),
            external_url: external_url.to_owned(),
            version: WEBHOOK_VERSION.to_owned(),
            truncated_alerts: 0,
        }
    }
}

/// `s` escaped to sit between double quotes, as Go's `%q` does for the characters that
/// matter in a group key (backslash, quote, line breaks and tabs).
fn go_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}
