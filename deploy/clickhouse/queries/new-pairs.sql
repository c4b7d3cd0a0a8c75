-- answers: Which process→provider pairs appeared for the first time in the period (never seen before it)?
-- Reads the whole table: "never before" has no lower time bound.
SELECT
    host,
    exe,
    provider,
    toString(min(${ts})) AS first_seen,
    count() AS exchanges
FROM ${database}.${table} FINAL
WHERE provider != ''
GROUP BY host, exe, provider
HAVING min(${ts}) >= now() - ${since}
ORDER BY first_seen DESC, host, exe, provider
