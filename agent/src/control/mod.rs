//! Control by workload: identity selectors shared by every rule, cost budgets and rate limits
//! (`[[limits]]`), approved providers and models (`[[allow]]`), and groups blocked after an
//! anomaly the analysis policy blocks ([`quarantine`]).
//!
//! The data path calls [`gate::admit`] once per LLM exchange after the request body is read,
//! and [`gate::settle`] when the exchange's record is built; events leave through
//! [`events::deliver`].

pub mod allow;
pub mod at_connect;
pub mod bucket;
pub mod budget;
pub mod config;
pub mod engine;
pub mod engine_metrics;
pub mod events;
pub mod gate;
pub mod glob;
pub mod metrics;
pub mod quarantine;
pub mod reload;
pub mod selector;
pub mod shadow;
pub mod state;
pub mod window;

pub use self::{
    config::{AllowRule, ControlConfig, ControlRules, LimitRule},
    engine::Control,
    events::{ControlEvent, EventSink},
    glob::Glob,
    selector::{Field, GroupBy, Identity, OwnedIdentity, Selector},
};
