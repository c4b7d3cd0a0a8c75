-- answers: Which connections were relayed uninspected (never decrypted), to which name, and why?
SELECT
    host,
    exe,
    comm,
    sni,
    not_intercepted_reason AS reason,
    count() AS connections,
    sum(request_bytes + response_bytes) AS bytes,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 0
GROUP BY host, exe, comm, sni, reason
ORDER BY connections DESC, host, exe, comm, sni, reason
