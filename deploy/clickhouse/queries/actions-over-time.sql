-- answers: How many exchanges did the policy flag, redact or block per hour?
-- A time series (time is the start of the hour, in the server's zone).
SELECT
    toStartOfHour(${ts}) AS time,
    action,
    count() AS exchanges
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND action IN ('flag', 'redact', 'block')
GROUP BY time, action
ORDER BY time, action
