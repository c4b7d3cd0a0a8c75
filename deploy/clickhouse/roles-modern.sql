-- Reader roles for the modern schema (ClickHouse 22.3 and later, SQL-driven access control).
-- Apply as an administrator: clickhouse-client --multiquery < roles-modern.sql
-- (with another [sink.clickhouse] database or table, change llmtrace.traces below first).
-- On a cluster, add ON CLUSTER <name> to each statement (or run the file on every node, unless
-- your access storage is replicated): Distributed reads check the grants on each shard's
-- traces_local too, hence the second grant, which is harmless on a single node.
--
-- llmtrace_reader: every trace column except what the prompts and answers said: the request
--   and response bodies, the tool-call arguments the model produced, and the calling process's
--   command line (a command-line client given its prompt as an argument holds it there). The
--   columns are the ones agent/src/sink/row.rs marks `body` (tests/readers.rs checks this list
--   against them). Enough for every saved query in queries/ (`llmtrace report`), dashboards,
--   cost and usage: give it to platform, FinOps and most security analysts.
-- llmtrace_full_reader: every column, bodies included: give it only to the few people who
--   investigate an incident and may read what was sent.
-- Columns a later migration adds are readable by both roles (the reader's grant is all columns
-- minus the revoked ones), so a new body column must be revoked here too (re-run this file).
--
-- ClickHouse 18.16 has no roles or column grants: there, use readers-18.16/ (users with a
-- database list, and a Distributed table without the body columns that the agent keeps).

CREATE ROLE IF NOT EXISTS llmtrace_reader;
GRANT SELECT ON llmtrace.traces TO llmtrace_reader;
REVOKE SELECT(cmdline, request_body, response_body, `tool_calls.arguments`) ON llmtrace.traces FROM llmtrace_reader;
GRANT SELECT ON llmtrace.traces_local TO llmtrace_reader;
REVOKE SELECT(cmdline, request_body, response_body, `tool_calls.arguments`) ON llmtrace.traces_local FROM llmtrace_reader;

CREATE ROLE IF NOT EXISTS llmtrace_full_reader;
GRANT SELECT ON llmtrace.* TO llmtrace_full_reader;

-- Example users (passwords from your secret store, never this file):
-- CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '…' DEFAULT ROLE llmtrace_reader;
-- GRANT llmtrace_reader TO analyst;
