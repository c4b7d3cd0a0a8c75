//! Control by workload: identity selectors shared by every rule, cost budgets and rate limits
//! (`[[limits]]`), approved providers and models (`[[allow]]`).

pub mod glob;
pub mod selector;

pub use self::{
    glob::Glob,
    selector::{Field, GroupBy, Identity, Selector},
};
