//! Durable storage behind one trait, [`Store`]. Reads go straight to a pool of readers;
//! every write goes through one bounded queue to one writer task, which applies many
//! requests' [`WriteBatch`]es in a single transaction and a single fsync (group commit) and
//! answers each request only after that commit. A full queue is refused at once
//! ([`WriteError::QueueFull`]), never grown.
//!
//! The store knows paywarden's objects (from `paywarden-core`) and SQL; it knows nothing of
//! HTTP, the Stripe wire format or card numbers.

use async_trait::async_trait;
use paywarden_core::ledger::AuditReport;
use paywarden_core::{Charge, PaymentIntent, PaymentMethod, Posting, Refund, Timestamp};

mod audit;
mod bulk;
pub mod postgres;
mod rows;
pub mod schema;
pub mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use postgres::{PgOptions, PgStore};
pub use schema::{ExtraMigrations, SchemaOptions, SchemaPlan};
pub use sqlite::{SqliteOptions, SqliteStore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// `acct_...`
    pub id: String,
    pub name: String,
    pub created: Timestamp,
}

/// A stored API key: only its SHA-256 and a short, displayable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: [u8; 32],
    pub merchant: String,
    /// e.g. `sk_test_4eC3` — enough for an operator to tell keys apart, useless to an attacker.
    pub prefix: String,
    pub created: Timestamp,
}

/// The first response to an idempotent request, replayed byte for byte to its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub merchant: String,
    pub key: String,
    /// SHA-256 of the method, path and parameters of the first request.
    pub request_hash: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub created: Timestamp,
}

/// An event (Stripe's `event` object). Written in the same batch as the change it describes
/// (the outbox). Its deliveries are queued lazily: each endpoint has a cursor over the events,
/// and [`Write::ClaimDeliveries`] turns the events after it into delivery rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// `evt_...`
    pub id: String,
    pub merchant: String,
    /// e.g. `payment_intent.succeeded`.
    pub kind: String,
    pub created: Timestamp,
    /// The event's JSON, exactly as delivered and listed.
    pub json: String,
}

/// Whether an endpoint receives deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }
}

/// A webhook endpoint. Its signing secret is not stored: it is derived from the data dir's
/// webhook key and the endpoint's id when needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookEndpointRecord {
    /// `we_...`
    pub id: String,
    pub merchant: String,
    pub url: String,
    /// Event types, or `*` for all.
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub status: EndpointStatus,
    /// Why it was disabled (paywarden disables an endpoint that keeps failing).
    pub disabled_reason: Option<String>,
    /// Unix ms of the first failed attempt since its last success; None when healthy.
    pub failing_since_ms: Option<i64>,
    pub created: Timestamp,
}

impl WebhookEndpointRecord {
    /// `,*,` or `,a,b,`: what a claim matches an event's type against.
    pub fn events_filter(&self) -> String {
        format!(",{},", self.enabled_events.join(","))
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up at the retry horizon.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// One event's delivery to one endpoint. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub endpoint: String,
    pub event: String,
    pub merchant: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub last_attempt_ms: Option<i64>,
    /// The receiver's HTTP status on the last attempt, if it answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (timeout, connection refused, non-2xx).
    pub last_error: Option<String>,
}

/// A delivery that is due, with what the sender needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub url: String,
    /// The event's JSON: the request body.
    pub body: String,
}

/// Events after one endpoint's cursor: deliveries not yet queued (see [`Store::unclaimed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimed {
    pub endpoint: String,
    pub merchant: String,
    pub url: String,
    /// The endpoint's cursor when read (a claim expects it unchanged).
    pub cursor_seq: i64,
    /// Where the cursor goes once these are claimed: past the last of them, or past every
    /// scanned event when fewer than asked were wanted (types the endpoint does not take).
    pub through_seq: i64,
    /// `(seq, event)`, oldest first.
    pub events: Vec<(i64, EventRecord)>,
}

/// One change; a [`WriteBatch`] of them is applied atomically.
#[derive(Debug, Clone)]
pub enum Write {
    Merchant(Merchant),
    ApiKey(ApiKeyRecord),
    PaymentMethod(PaymentMethod),
    /// A new intent (its `version` is 0).
    InsertIntent(PaymentIntent),
    /// Replaces the stored intent whose version is `intent.version - 1`; any other stored
    /// version is a [`WriteError::Conflict`] (another request changed it first).
    UpdateIntent(PaymentIntent),
    /// Inserts or replaces a charge.
    Charge(Charge),
    InsertRefund(Refund),
    Postings(Vec<Posting>),
    /// Inserts the record unless the key already has one created at or after
    /// `replaces_before` (an older one has expired and is replaced). A live one is a
    /// [`WriteError::Conflict`].
    Idempotency {
        record: IdempotencyRecord,
        replaces_before: Timestamp,
    },
    /// A new event (the outbox; its deliveries are claimed later, see [`Unclaimed`]).
    Event(EventRecord),
    /// Inserts or replaces an endpoint (never another merchant's). A new endpoint's cursor
    /// starts at the newest event, and so does a disabled one's when it is enabled again.
    WebhookEndpoint(WebhookEndpointRecord),
    /// Deletes an endpoint and the deliveries still pending to it.
    DeleteWebhookEndpoint {
        merchant: String,
        id: String,
    },
    /// The outcome of a delivery attempt (replaces the row's state).
    Delivery(Delivery),
    /// Queues an endpoint's next deliveries: moves its cursor from `after_seq` to
    /// `through_seq` and inserts their rows. A cursor that is no longer at `after_seq` is a
    /// [`WriteError::Conflict`] ([`ConflictKind::Claimed`]): another delivery loop over the
    /// same database claimed them, and only one sends them. Claims nothing for an endpoint
    /// deleted meanwhile.
    ClaimDeliveries {
        endpoint: String,
        merchant: String,
        after_seq: i64,
        through_seq: i64,
        deliveries: Vec<Delivery>,
    },
}

/// Changes that commit together or not at all.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub ops: Vec<Write>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn push(&mut self, op: Write) -> &mut Self {
        self.ops.push(op);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The intent's stored version was not the expected one.
    IntentVersion,
    /// A live idempotency record exists for the key.
    IdempotencyKey,
    /// A unique id or name already exists.
    Duplicate,
    /// An endpoint's cursor had moved: another delivery loop claimed those events first.
    Claimed,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the writer queue is full ({limit} batches waiting); retry shortly")]
    QueueFull { limit: usize },
    #[error("write conflict: {0:?}")]
    Conflict(ConflictKind),
    #[error("the store is shutting down")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema step at open failed or refused (this release cannot run on the database).
    #[error("{0}")]
    Schema(#[from] schema::SchemaError),
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
    #[error("No such {object}: '{id}'")]
    CursorNotFound { object: &'static str, id: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A page request, newest first (Stripe's list semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// 1..=100.
    pub limit: u32,
    /// Objects older than this id.
    pub starting_after: Option<String>,
    /// Objects newer than this id (still returned newest first).
    pub ending_before: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PageOf<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// Gauges of the store's bounded structures (for `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub writer_queue_len: usize,
    pub writer_queue_max: usize,
    pub batches_committed: u64,
    pub commits: u64,
    /// Commits that took the bulk path (a constant number of statements per group); the rest
    /// replayed batch by batch.
    pub bulk_commits: u64,
    /// Reader connections open and busy now, and the pool's limit.
    pub readers_busy: usize,
    pub readers_max: usize,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn merchant_by_key_hash(&self, hash: &[u8; 32]) -> Result<Option<Merchant>, StoreError>;
    async fn merchant_by_name(&self, name: &str) -> Result<Option<Merchant>, StoreError>;
    async fn merchants_count(&self) -> Result<u64, StoreError>;

    async fn payment_method(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<PaymentMethod>, StoreError>;
    async fn list_payment_methods(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<PaymentMethod>, StoreError>;
    async fn payment_intent(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<PaymentIntent>, StoreError>;
    async fn list_payment_intents(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<PaymentIntent>, StoreError>;
    async fn charge(&self, merchant: &str, id: &str) -> Result<Option<Charge>, StoreError>;
    async fn refund(&self, merchant: &str, id: &str) -> Result<Option<Refund>, StoreError>;
    async fn list_refunds(
        &self,
        merchant: &str,
        payment_intent: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<Refund>, StoreError>;
    async fn idempotency(
        &self,
        merchant: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    async fn event(&self, merchant: &str, id: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Events newest first, optionally of one type.
    async fn list_events(
        &self,
        merchant: &str,
        kind: Option<&str>,
        page: &Page,
    ) -> Result<PageOf<EventRecord>, StoreError>;
    async fn webhook_endpoint(
        &self,
        merchant: &str,
        id: &str,
    ) -> Result<Option<WebhookEndpointRecord>, StoreError>;
    async fn list_webhook_endpoints(
        &self,
        merchant: &str,
        page: &Page,
    ) -> Result<PageOf<WebhookEndpointRecord>, StoreError>;
    /// For each enabled endpoint with events after its cursor: the next at most `per_endpoint`
    /// events it wants, looking at most `scan_max` events past the cursor.
    async fn unclaimed(
        &self,
        per_endpoint: u32,
        scan_max: u32,
    ) -> Result<Vec<Unclaimed>, StoreError>;
    /// How many deliveries of this event are still to be made: queued and pending (also to an
    /// endpoint disabled since: they resume if it is enabled again), or not yet claimed by an
    /// enabled endpoint.
    async fn pending_webhooks(&self, merchant: &str, event: &str) -> Result<u64, StoreError>;
    /// Pending deliveries to enabled endpoints whose next attempt is at or before `now_ms`,
    /// soonest first, at most `limit`.
    async fn due_deliveries(&self, now_ms: i64, limit: u32)
    -> Result<Vec<DueDelivery>, StoreError>;
    /// A merchant's deliveries of one event, or to one endpoint (newest first), at most `limit`.
    async fn deliveries(
        &self,
        merchant: &str,
        event: Option<&str>,
        endpoint: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Deliveries still pending, all merchants, queued or not yet claimed by an enabled
    /// endpoint (the outbox's backlog, for `/metrics`).
    async fn pending_deliveries(&self) -> Result<u64, StoreError>;

    /// Queues the batch for the writer and returns once it is durable (committed with the
    /// configured fsync discipline), or refused.
    async fn write(&self, batch: WriteBatch) -> Result<(), WriteError>;

    /// Deletes idempotency records created before `before`; returns how many.
    async fn purge_idempotency(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Recomputes every ledger invariant from the stored entries (`paywarden ledger verify`).
    async fn audit(&self) -> Result<AuditReport, StoreError>;

    /// The schema's history: every applied migration, its kind and the release that applied
    /// it, oldest first.
    async fn schema_history(&self) -> Result<Vec<schema::AppliedMigration>, StoreError>;

    fn stats(&self) -> StoreStats;
}
