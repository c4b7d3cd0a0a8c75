//! The admin surface: Prometheus metrics, health and readiness, and a JSON status report
//! (what `llmtrace status` prints).

pub mod client;
pub mod server;
pub mod status;
pub mod tail;
