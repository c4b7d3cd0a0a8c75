//! Provider faults on demand, by path: the fake resets the connection in the middle of the
//! request body, of the response body or of an event stream, or never answers.
//!
//! - `/fault/reset-request`: reads the first part of the request body, then fails the
//!   exchange (HTTP/1.1: the connection closes; HTTP/2: the stream is reset).
//! - `/fault/reset-response`: sends a 200 JSON head and half a document, then aborts.
//! - `/fault/reset-stream`: sends two SSE events, then aborts.
//! - `/fault/stall`: reads the request and never answers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    Request, Response,
    body::{Frame, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
};
use tokio::sync::mpsc;

use super::{ChannelBody, ReplyBody};

/// Paths under this prefix are faults.
pub const PREFIX: &str = "/fault/";

fn reset(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, what.to_owned())
}

pub(super) async fn handle(req: Request<Incoming>) -> Result<Response<ReplyBody>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    match path.trim_start_matches(PREFIX) {
        "reset-request" => {
            // One frame of the body, then the exchange fails while the rest is in flight.
            let _ = body.frame().await;
            Err(reset("fake provider: reset mid-request"))
        }
        "stall" => {
            let _ = body.collect().await;
            tokio::time::sleep(Duration::from_hours(1)).await;
            Err(reset("fake provider: stalled"))
        }
        "reset-response" => {
            let _ = body.collect().await;
            Ok(aborted(
                "application/json",
                vec![r#"{"id":"chatcmpl-fault","object":"chat.completion","choices":[{"#.into()],
            ))
        }
        "reset-stream" => {
            let _ = body.collect().await;
            let event = |text: &str| {
                format!(
                    "data: {{\"id\":\"chatcmpl-fault\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
                )
            };
            Ok(aborted(
                "text/event-stream",
                vec![event("Hello"), event(" from")],
            ))
        }
        _ => Err(reset("fake provider: unknown fault")),
    }
}

/// A 200 response whose body sends `chunks` and then fails.
fn aborted(content_type: &'static str, chunks: Vec<String>) -> Response<ReplyBody> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tx
            .send(Err(reset("fake provider: reset mid-response")))
            .await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
