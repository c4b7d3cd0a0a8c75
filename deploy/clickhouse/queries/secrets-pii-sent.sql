-- answers: Which processes sent secrets or personal data (PII) to which provider (request findings; blocked requests were never sent and are left out)?
-- Workload columns: host, exe and comm identify the process today.
SELECT
    host,
    exe,
    comm,
    provider,
    countIf(arrayExists((k, l) -> k LIKE 'secret.%' AND l = 'request', findings.kind, findings.location)) AS secret_exchanges,
    countIf(arrayExists((k, l) -> k LIKE 'pii.%' AND l = 'request', findings.kind, findings.location)) AS pii_exchanges,
    countIf(action = 'redact') AS redacted,
    toString(min(${ts})) AS first_seen,
    toString(max(${ts})) AS last_seen
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND action != 'block'
    AND arrayExists((k, l) -> (k LIKE 'secret.%' OR k LIKE 'pii.%') AND l = 'request', findings.kind, findings.location)
GROUP BY host, exe, comm, provider
ORDER BY secret_exchanges + pii_exchanges DESC, host, exe, comm, provider
