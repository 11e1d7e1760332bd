//! The payments core: money, the PaymentIntent state machine, refunds and the double-entry
//! ledger. It does no I/O and knows nothing of HTTP, SQL or card numbers: time and object ids
//! are passed in, acquirer outcomes are passed in, and every function is a plain computation
//! that tests can call exhaustively.

#[doc(hidden)]
pub mod fuzzing;
pub mod ledger;
pub mod metadata;
pub mod money;
pub mod payment;

pub use ledger::{Account, Leg, Posting, PostingKind};
pub use metadata::{Metadata, MetadataError};
pub use money::{Amount, AmountError, Currency, CurrencyError};
pub use payment::{
    AuthOutcome, CancellationReason, CaptureMethod, CardSummary, Charge, ChargeStatus, Decline,
    PaymentError, PaymentIntent, PaymentMethod, Refund, StateError, Status,
};

/// Unix time in seconds, as Stripe's `created` fields.
pub type Timestamp = i64;
