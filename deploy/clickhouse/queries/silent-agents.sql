-- answers: Which agents (hosts) stopped reporting: seen in the period, but no trace for quiet_minutes?
-- param quiet_minutes: number = 60
-- Rows come from traffic: a host whose apps made no LLM calls looks the same as a stopped agent.
SELECT
    host,
    toString(max(${ts})) AS last_seen,
    intDiv(toUInt32(now()) - toUInt32(max(${ts})), 60) AS minutes_silent,
    count() AS exchanges
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
GROUP BY host
HAVING max(${ts}) < now() - ${quiet_minutes} * 60
ORDER BY last_seen, host
