//! A connection's metadata, and its record when it carries no HTTP exchange of its own.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use super::{context::micros_since_epoch, record::ExchangeRecord, route::SpliceReason};
use crate::{identity::ProcessDetails, tls::Alpn, transport::Redirect};

/// What is known about a connection before (or without) HTTP.
#[derive(Debug)]
pub struct ConnectionMeta {
    /// Connection id.
    pub id: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Destination and process.
    pub redirect: Redirect,
    /// Start (monotonic).
    pub started: Instant,
    /// Start (wall clock).
    pub started_at: SystemTime,
    /// Provider name from the provider list.
    pub provider: Arc<str>,
    /// Executable, command line, container (from /proc at accept).
    pub details: Arc<ProcessDetails>,
    /// Server name from the ClientHello.
    pub sni: Option<String>,
}

impl ConnectionMeta {
    /// The app's identity for the rejected-certificate memory: its executable, or its command
    /// name when the executable cannot be read.
    pub fn who(&self) -> &str {
        self.details
            .exe
            .as_deref()
            .unwrap_or(self.redirect.process.comm.as_str())
    }

    /// The record of a connection that carried no HTTP exchange of its own (relayed, or
    /// failed before HTTP).
    pub fn exchange_record(
        &self,
        intercepted: bool,
        reason: Option<SpliceReason>,
        bytes_up: u64,
        bytes_down: u64,
        error: Option<String>,
    ) -> ExchangeRecord {
        ExchangeRecord {
            connection_id: self.id,
            exchange_seq: 0,
            started_at_us: micros_since_epoch(self.started_at),
            first_byte_us: None,
            duration_us: self.started.elapsed().as_micros() as u64,
            sni: self.sni.clone(),
            alpn: Alpn::None.as_str(),
            upstream_alpn: None,
            http_version: None,
            method: None,
            path: None,
            status: None,
            bytes_up,
            bytes_down,
            client: self.client,
            orig_dst: self.redirect.orig_dst,
            process: self.redirect.process.clone(),
            provider: self.provider.clone(),
            details: self.details.clone(),
            error,
            intercepted,
            not_intercepted_reason: reason.map(SpliceReason::as_str),
            llm: None,
        }
    }
}
