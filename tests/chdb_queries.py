"""Runs the saved queries on the modern engine (chdb) over the production DDL.

Usage: chdb_queries.py WORKDIR
WORKDIR holds ddl.sql (rendered modern DDL), seed.sql (one INSERT, run twice like a replayed
batch), query-N.sql files (rendered for the modern schema) and optionally roles.sql (only
parsed: chdb has no access control). Writes query-N.json, each the query's answer in
ClickHouse's JSONCompact format. TZ in the environment sets the zone.
"""

import glob
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
    work = sys.argv[1]
    sess = chdb.session.Session(os.path.join(work, "chdb"))
    for stmt in statements(open(os.path.join(work, "ddl.sql")).read()):
        sess.query(stmt)
    seed = open(os.path.join(work, "seed.sql")).read()
    sess.query(seed)
    sess.query(seed)
    for path in sorted(glob.glob(os.path.join(work, "query-*.sql"))):
        sql = open(path).read() + "\nSETTINGS output_format_json_quote_64bit_integers = 0"
        answer = sess.query(sql, "JSONCompact").bytes()
        open(path[: -len(".sql")] + ".json", "wb").write(answer)
    print("queries", len(glob.glob(os.path.join(work, "query-*.json"))))
    # The roles file: chdb has no access control to run it, but its parser must accept it.
    roles = os.path.join(work, "roles.sql")
    if os.path.exists(roles):
        parsed = 0
        for stmt in statements(open(roles).read()):
            quoted = stmt.replace("\\", "\\\\").replace("'", "\\'")
            sess.query(f"SELECT formatQuery('{quoted}')", "CSV")
            parsed += 1
        print("roles_statements", parsed)


if __name__ == "__main__":
    main()
