//! Rows as both backends read them (`sqlx::FromRow`, by column name), and the objects they
//! become. The SQL that selects them lives with each backend.

use crate::{Delivery, DeliveryState, EventRecord, Merchant, StoreError};

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    endpoint_id: String,
    event_id: String,
    merchant_id: String,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    created: i64,
    last_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            endpoint: r.endpoint_id,
            event: r.event_id,
            merchant: r.merchant_id,
            state: DeliveryState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery state {:?}", r.state)))?,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            next_attempt_ms: r.next_attempt_at,
            created_ms: r.created,
            last_attempt_ms: r.last_attempt_at,
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
        })
    }
}

/// A due delivery: the delivery's columns, its endpoint's url and its event's JSON.
#[derive(sqlx::FromRow)]
pub(crate) struct DueRow {
    #[sqlx(flatten)]
    pub delivery: DeliveryRow,
    pub url: String,
    pub body: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: String,
    merchant_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    created: i64,
    data: String,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> EventRecord {
        EventRecord {
            id: r.id,
            merchant: r.merchant_id,
            kind: r.kind,
            created: r.created,
            json: r.data,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MerchantRow {
    id: String,
    name: String,
    created: i64,
}

impl From<MerchantRow> for Merchant {
    fn from(r: MerchantRow) -> Merchant {
        Merchant {
            id: r.id,
            name: r.name,
            created: r.created,
        }
    }
}

/// An endpoint with events after its cursor (the first step of `Store::unclaimed`).
#[derive(sqlx::FromRow)]
pub(crate) struct BacklogRow {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    pub events_filter: String,
    pub cursor_seq: i64,
}

/// One event past a cursor: its data only when the endpoint wants its type.
#[derive(sqlx::FromRow)]
pub(crate) struct ScannedRow {
    pub seq: i64,
    pub id: String,
    pub merchant_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub created: i64,
    pub data: Option<String>,
}

impl ScannedRow {
    /// The event, if the endpoint wants it.
    pub(crate) fn wanted(self) -> Option<(i64, EventRecord)> {
        let json = self.data?;
        Some((
            self.seq,
            EventRecord {
                id: self.id,
                merchant: self.merchant_id,
                kind: self.kind,
                created: self.created,
                json,
            },
        ))
    }
}

/// One endpoint's claimable events from the events scanned past its cursor, oldest first: at
/// most `per_endpoint` it wants; the cursor would move past the last of them, or past every
/// scanned event when fewer were wanted. None when there is nothing to move past.
pub(crate) fn unclaimed(
    w: BacklogRow,
    scanned: Vec<ScannedRow>,
    per_endpoint: u32,
) -> Option<crate::Unclaimed> {
    let mut u = crate::Unclaimed {
        endpoint: w.id,
        merchant: w.merchant_id,
        url: w.url,
        cursor_seq: w.cursor_seq,
        through_seq: w.cursor_seq,
        events: Vec::new(),
    };
    for r in scanned {
        if u.events.len() >= per_endpoint as usize {
            break;
        }
        u.through_seq = r.seq;
        if let Some(e) = r.wanted() {
            u.events.push(e);
        }
    }
    (u.through_seq > u.cursor_seq).then_some(u)
}

#[derive(sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    request_hash: Vec<u8>,
    status: i64,
    body: Vec<u8>,
    created: i64,
}

impl IdempotencyRow {
    /// The record of `key`, checking what a column's type cannot: a 32-byte hash, an HTTP status.
    pub(crate) fn into_record(self, merchant: &str, key: &str) -> Result<crate::IdempotencyRecord, StoreError> {
        let request_hash: [u8; 32] = self
            .request_hash
            .try_into()
            .map_err(|h: Vec<u8>| StoreError::Corrupt(format!("idempotency key {key}: request hash has {} bytes, not 32", h.len())))?;
        let status = u16::try_from(self.status)
            .map_err(|_| StoreError::Corrupt(format!("idempotency key {key}: status {} is not an HTTP status", self.status)))?;
        Ok(crate::IdempotencyRecord { merchant: merchant.to_string(), key: key.to_string(), request_hash, status, body: self.body, created: self.created })
    }
}
