"""Checks the production ClickHouse DDL and the agent's RowBinary bytes on a modern engine.

Usage: chdb_check.py WORKDIR COLUMNS
WORKDIR holds ddl.sql (rendered modern DDL) and batch.bin (the body of the agent's INSERT),
ddl_v1.sql (the previous schema, database llmtrace_v1) and upgrade.sql (the migrations after it).
Writes echo.bin (the stored rows as RowBinary, same column order) and typed.json; prints the
upgrade's outcome.
"""

import os
import sys

import chdb.session


def statements(sql):
    out, cur = [], []
    for line in sql.splitlines():
        cur.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(cur))
            cur = []
    out.append("\n".join(cur))
    code = lambda s: any(l.strip() and not l.strip().startswith("--") for l in s.splitlines())
    return [s.strip().rstrip(";") for s in out if code(s)]


def main():
    work, columns = sys.argv[1], sys.argv[2].split(",")
    sess = chdb.session.Session(os.path.join(work, "chdb"))
    for stmt in statements(open(os.path.join(work, "ddl.sql")).read()):
        sess.query(stmt)
    print("version", sess.query("SELECT version()", "CSV").bytes().decode().strip())

    types = dict(
        line.split("\t")
        for line in sess.query(
            "SELECT name, type FROM system.columns WHERE database = 'llmtrace' AND table = 'traces'",
            "TSV",
        ).bytes().decode().splitlines()
    )
    missing = [c for c in columns if c not in types]
    if missing:
        sys.exit(f"columns missing in the production table: {missing}")
    structure = ", ".join(f"`{c}` {types[c]}" for c in columns)
    cols = ", ".join(f"`{c}`" for c in columns)
    data = os.path.join(work, "batch.bin")
    insert = (
        f"INSERT INTO llmtrace.traces ({cols}) SETTINGS insert_deduplication_token = 'spool-1' "
        f"SELECT * FROM file('{data}', 'RowBinary', '{structure}')"
    )
    in_file = sess.query(f"SELECT count() FROM file('{data}', 'RowBinary', '{structure}')", "CSV").bytes().decode().strip()
    print(f"rows_in_file={in_file}")
    sess.query(insert)
    first = sess.query("SELECT count() FROM llmtrace.traces", "CSV").bytes().decode().strip()
    print(f"first_insert_count={first}")
    sess.query(insert)  # a replayed batch: same token, must not add rows
    count = sess.query("SELECT count() FROM llmtrace.traces", "CSV").bytes().decode().strip()
    print(f"dedup_count={count}")

    echo = sess.query(f"SELECT {cols} FROM llmtrace.traces ORDER BY connection_id", "RowBinary").bytes()
    open(os.path.join(work, "echo.bin"), "wb").write(echo)
    typed = sess.query(
        "SELECT toString(trace_id) AS trace_id, toString(toUnixTimestamp64Micro(start_time)) AS start_us, "
        "stream, capture_complete, IPv6NumToString(dst_addr) AS dst_addr, findings.kind AS finding_kinds, "
        "usage_estimated, toString(container_runtime) AS container_runtime, toString(netns) AS netns, "
        "k8s_pod_uid, toString(cluster) AS cluster "
        "FROM llmtrace.traces ORDER BY connection_id",
        "JSONEachRow",
    ).bytes()
    open(os.path.join(work, "typed.json"), "wb").write(typed)
    codecs = sess.query(
        "SELECT count() FROM system.columns WHERE database = 'llmtrace' AND table = 'traces' "
        "AND compression_codec LIKE '%ZSTD%'",
        "CSV",
    ).bytes().decode().strip()
    print(f"zstd_columns={codecs}")
    upgrade(sess, work, columns)


def upgrade(sess, work, columns):
    """The previous schema with a row the old agent wrote, then the migrations (twice: they
    must be re-runnable); the old row reads through the new columns."""
    for stmt in statements(open(os.path.join(work, "ddl_v1.sql")).read()):
        sess.query(stmt)
    sess.query(
        "INSERT INTO llmtrace_v1.traces (trace_id, connection_id, start_time, end_time, host, pod_uid, model) "
        "VALUES (generateUUIDv4(), 77, now64(6), now64(6), 'old-host', '0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40', 'gpt-old')"
    )
    for _ in range(2):
        for stmt in statements(open(os.path.join(work, "upgrade.sql")).read()):
            sess.query(stmt)
    have = set(
        sess.query(
            "SELECT name FROM system.columns WHERE database = 'llmtrace_v1' AND table = 'traces'", "CSV"
        ).bytes().decode().replace('"', "").split()
    )
    print(f"upgrade_missing={[c for c in columns if c not in have]}")
    old = sess.query(
        "SELECT model, k8s_pod_uid, container_runtime, netns FROM llmtrace_v1.traces WHERE connection_id = 77",
        "CSV",
    ).bytes().decode().strip().replace('"', "")
    print(f"upgrade_old_row={old}")
    indexes = sess.query(
        "SELECT name FROM system.data_skipping_indices WHERE database = 'llmtrace_v1' AND table = 'traces'", "CSV"
    ).bytes().decode().replace('"', "").split()
    print(f"upgrade_indexes={sorted(indexes)}")


if __name__ == "__main__":
    main()
