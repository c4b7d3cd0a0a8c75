//! llmtrace agent: transparent interception of LLM API traffic on a host.
//!
//! Data path: the kernel hook ([`ebpf`]) redirects provider connections to the agent's
//! listeners ([`transport`]), which attribute each connection and relay it. The provider
//! map is kept in sync by [`dns`]; [`admin`] serves metrics and status. [`app`] wires it all
//! from a [`config::Config`]; [`cli`] holds the subcommands beyond `run`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod analysis;
pub mod anomaly;
pub mod app;
pub mod cli;
pub mod config;
pub mod connect_guard;
pub mod control;
pub mod dns;
pub mod ebpf;
pub mod identity;
pub mod kube;
pub mod llm;
pub mod netns;
pub mod proxy;
pub mod sink;
pub mod tls;
pub mod trace;
pub mod transport;
