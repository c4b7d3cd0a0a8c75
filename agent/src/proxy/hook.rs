//! The hook point for LLM analysis on the data path.
//!
//! Analysis that must act inline (block a request, rewrite headers, refuse a response) plugs
//! in here; everything else consumes [`super::record::ExchangeRecord`]s from the tee. The
//! hook runs in the request phase (before anything is sent upstream) and in the response
//! phase (before the response head goes to the app). The LLM analysis, which also needs the
//! bodies (redaction, early stop of a stream), runs in [`super::tap`] instead.

use hyper::{StatusCode, http::request, http::response};

use super::exchange::ExchangeContext;

/// What the hook wants done with an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on.
    Forward,
    /// Answer the app with a synthetic response instead (the provider never sees the request,
    /// or the provider's response is discarded).
    Block {
        /// Status of the synthetic response.
        status: StatusCode,
        /// Body text, shown to the app.
        message: String,
    },
}

/// Inline inspection of exchanges. Implementations must be fast: they run on the data path.
pub trait ExchangeHook: Send + Sync + std::fmt::Debug + 'static {
    /// The request head, before it is sent upstream (headers may be edited).
    fn on_request(&self, _ctx: &ExchangeContext, _head: &mut request::Parts) -> Verdict {
        Verdict::Forward
    }

    /// The response head, before it is sent to the app (headers may be edited).
    fn on_response(&self, _ctx: &ExchangeContext, _head: &mut response::Parts) -> Verdict {
        Verdict::Forward
    }
}

/// No inline analysis.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl ExchangeHook for NoHook {}
