//! Local root CA for llmtrace (see the ca issue).
