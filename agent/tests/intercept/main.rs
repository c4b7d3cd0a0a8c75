//! The interception proxy in-process: the real `Intercept` handler behind the real accept
//! loop, real TLS on both legs over loopback, a fake provider with its own CA, and curl.

mod fidelity;
mod llm;
mod protocol;
mod robustness;
mod routing;
mod streaming;
mod support;
mod websocket;
