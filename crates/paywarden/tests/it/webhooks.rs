//! Webhooks end to end (being written).
