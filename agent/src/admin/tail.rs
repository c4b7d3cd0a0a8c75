//! `/tail`: completed traces as they happen, one JSON object per line, for `llmtrace tail`.
//!
//! A slow reader misses rows rather than slowing the agent: the sink's broadcast channel is
//! bounded, and a lagging subscriber gets a `{"missed": N}` line saying how many it lost.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::BodyExt as _;
use http_body_util::{StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::sink::SinkHandle;

/// A never-ending body of JSON lines, one per completed trace.
pub fn body(sink: &SinkHandle) -> BoxBody<Bytes, Infallible> {
    let rx = sink.subscribe();
    let lines = stream::unfold(rx, |mut rx| async move {
        let line = next_line(&mut rx).await?;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx))
    });
    StreamBody::new(lines).boxed()
}

async fn next_line(
    rx: &mut broadcast::Receiver<std::sync::Arc<crate::sink::TraceRow>>,
) -> Option<String> {
    match rx.recv().await {
        Ok(row) => {
            let mut line = serde_json::to_string(&*row).ok()?;
            line.push('\n');
            Some(line)
        }
        Err(RecvError::Lagged(n)) => Some(format!("{{\"missed\":{n}}}\n")),
        Err(RecvError::Closed) => None,
    }
}
