//! How a response body ended, and what the exchange's record says about it.
//!
//! An app that closes once its provider's stream reached the terminal event had the whole
//! answer: several SDKs stop reading there (the Python `openai` SDK closes the response right
//! after `data: [DONE]`), and a provider may send the end of the chunked body a few
//! milliseconds later. That exchange is complete. Only an app that closes before the terminal
//! event cut the exchange short; its record says how far the response got.
//!
//! A response that reached its terminal event lasted until that event, whether the app then
//! read the body's end or closed: the same provider behaviour gives the same duration whichever
//! SDK the app uses.

use std::borrow::Cow;

use crate::llm::ExchangeAnalysis;

/// How the data path saw a response body end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end (or a synthetic body sent whole).
    Complete,
    /// The exchange failed: the provider's body broke, or the exchange never got a body. A
    /// fixed message is not copied unless the exchange is recorded with it.
    Failed(Cow<'static, str>),
    /// The app went away before the body ended.
    AppClosed,
}

/// The start of the error of an exchange the app cut short.
pub const CUT_SHORT: &str = "the app closed the exchange before the response ended";

/// The parts of an exchange's record its ending decides (the record lends them, so the rules
/// here do not depend on the record's shape).
#[derive(Debug)]
pub struct EndingParts<'a> {
    /// Microseconds from start to the end of the response.
    pub duration_us: &'a mut u64,
    /// What went wrong, if anything.
    pub error: &'a mut Option<String>,
    /// Body bytes the app received.
    pub bytes_down: u64,
    /// The LLM analysis, for exchanges the engine recognised.
    pub analysis: Option<&'a mut ExchangeAnalysis>,
}

/// Applies `end`. For [`BodyEnd::AppClosed`] this needs the LLM analysis (when there is one)
/// already done: it tells whether the terminal event came first.
pub fn settle(mut parts: EndingParts<'_>, end: BodyEnd) {
    match end {
        BodyEnd::Complete => {
            until_terminal(&mut parts);
        }
        BodyEnd::Failed(error) => *parts.error = Some(error.into_owned()),
        BodyEnd::AppClosed => {
            if !until_terminal(&mut parts) {
                cut_short(parts);
            }
        }
    }
}

/// Ends the exchange at its response's terminal event; false when none was seen.
fn until_terminal(parts: &mut EndingParts<'_>) -> bool {
    let Some(ms) = parts.analysis.as_ref().and_then(|a| a.progress.terminal_ms) else {
        return false;
    };
    *parts.duration_us = micros(ms);
    true
}

fn cut_short(parts: EndingParts<'_>) {
    let bytes = parts.bytes_down;
    let message = match parts.analysis {
        Some(analysis) => {
            // What was captured is not the whole response.
            analysis.response_truncated = true;
            let events = analysis.progress.events;
            format!("{CUT_SHORT} (after {events} events, {bytes} bytes; no terminal event)")
        }
        // Not an LLM exchange: nothing tells where its response would have ended.
        None => format!("{CUT_SHORT} (after {bytes} bytes)"),
    };
    parts.error.get_or_insert(message);
}

// Durations are far below 2^52 µs, and never negative.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn micros(ms: f64) -> u64 {
    (ms * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        llm::Progress,
        proxy::{inline_analysis::LlmRecord, record::ExchangeRecord},
    };

    fn record(progress: Option<Progress>) -> ExchangeRecord {
        ExchangeRecord {
            first_byte_us: Some(1000),
            duration_us: 250_000,
            alpn: "http/1.1",
            status: Some(200),
            bytes_up: 10,
            bytes_down: 512,
            provider: "openai".into(),
            intercepted: true,
            llm: progress.map(|progress| {
                Box::new(LlmRecord {
                    analysis: ExchangeAnalysis {
                        progress,
                        ..ExchangeAnalysis::default()
                    },
                    request_dropped_bytes: 0,
                })
            }),
            ..ExchangeRecord::sample()
        }
    }

    #[test]
    fn closing_after_the_terminal_event_is_a_complete_exchange() {
        let mut r = record(Some(Progress {
            events: 9,
            terminal_ms: Some(189.5),
        }));
        r.settle(BodyEnd::AppClosed);
        assert_eq!(r.error, None);
        assert_eq!(r.duration_us, 189_500);
        let a = &r.llm.as_ref().unwrap().analysis;
        assert!(!a.response_truncated);
    }

    #[test]
    fn a_body_read_to_its_late_end_also_lasted_until_the_terminal_event() {
        let mut r = record(Some(Progress {
            events: 9,
            terminal_ms: Some(189.5),
        }));
        r.settle(BodyEnd::Complete);
        assert_eq!((r.error.as_deref(), r.duration_us), (None, 189_500));
        let mut r = record(None);
        r.settle(BodyEnd::Complete);
        assert_eq!((r.error.as_deref(), r.duration_us), (None, 250_000));
    }

    #[test]
    fn closing_before_the_terminal_event_is_cut_short_with_how_far_it_got() {
        let mut r = record(Some(Progress {
            events: 3,
            terminal_ms: None,
        }));
        r.settle(BodyEnd::AppClosed);
        assert_eq!(
            r.error.as_deref(),
            Some(
                "the app closed the exchange before the response ended \
                 (after 3 events, 512 bytes; no terminal event)"
            )
        );
        assert_eq!(r.duration_us, 250_000);
        assert!(r.llm.as_ref().unwrap().analysis.response_truncated);
    }

    #[test]
    fn other_ends() {
        let mut r = record(None);
        r.settle(BodyEnd::AppClosed);
        assert_eq!(
            r.error.as_deref(),
            Some("the app closed the exchange before the response ended (after 512 bytes)")
        );
        let mut r = record(Some(Progress::default()));
        r.settle(BodyEnd::Complete);
        assert_eq!((r.error.as_deref(), r.duration_us), (None, 250_000));
        r.settle(BodyEnd::Failed("the provider's body failed".into()));
        assert_eq!(r.error.as_deref(), Some("the provider's body failed"));
        // An earlier error (e.g. a provider error event) is kept.
        let mut r = record(Some(Progress::default()));
        r.error = Some("upstream reset".into());
        r.settle(BodyEnd::AppClosed);
        assert_eq!(r.error.as_deref(), Some("upstream reset"));
    }
}
