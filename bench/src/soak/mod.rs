//! soak: two ssepush instances on v3 with one tansu broker, thousands of streams with churn,
//! steady publishing over HTTP and Kafka, stalled clients, and faults, with a ledger that
//! proves nothing was lost or duplicated. This part holds the ledger.

pub mod ledger;
pub mod rng;
pub mod sent;
