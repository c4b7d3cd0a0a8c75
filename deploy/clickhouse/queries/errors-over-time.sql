-- answers: What share of each provider's exchanges failed per hour?
-- A time series (time is the start of the hour, in the server's zone). An exchange failed
-- when the response status was 4xx/5xx, no response came, or the agent recorded an error.
-- Exchanges the policy blocked are not failures (see actions-over-time).
SELECT
    toStartOfHour(${ts}) AS time,
    provider,
    count() AS exchanges,
    countIf(status IS NULL OR status >= 400 OR error != '') AS errors,
    round(errors / exchanges, 4) AS error_rate
FROM ${database}.${table} FINAL
WHERE ${ts} >= now() - ${since}
    AND intercepted = 1
    AND action != 'block'
GROUP BY time, provider
ORDER BY time, provider
