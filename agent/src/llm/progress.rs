//! How far a response got: what the record phase needs to judge an exchange the app closed
//! before the body's end.
//!
//! Many SDKs stop reading once their provider's terminal event arrived (the Python `openai`
//! SDK closes the response right after `data: [DONE]`), while the provider may send the end of
//! the chunked body a few milliseconds later. Such an app had the whole answer; only an app that
//! closes before the terminal event cut the exchange short.

/// Progress of one response, from the bytes the analysis saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// SSE events or JSON documents parsed from the response body.
    pub events: u64,
    /// Milliseconds from the request to the arrival of the response's terminal event (`[DONE]`,
    /// `message_stop`, `response.completed`, a Gemini candidate's `finishReason`, an error
    /// event, or the close of a JSON body's top-level value); `None` when none was seen.
    pub terminal_ms: Option<f64>,
}

impl Progress {
    /// Whether the response was whole before the body ended.
    pub fn reached_terminal(&self) -> bool {
        self.terminal_ms.is_some()
    }
}
