-- answers: How many findings of each kind and severity did the analysis raise per hour, in how many exchanges?
-- A time series (time is the start of the hour, in the server's zone), one finding per
-- element of the findings column.
SELECT
    toStartOfHour(${ts}) AS time,
    findings.kind AS kind,
    findings.severity AS severity,
    count() AS occurrences,
    uniqExact(trace_id) AS exchanges
FROM ${database}.${table} FINAL
ARRAY JOIN findings
WHERE ${ts} >= now() - ${since}
GROUP BY time, kind, severity
ORDER BY time, kind, severity
