-- Views for the common questions, for ad-hoc SQL and dashboards. They read the rollups, so they
-- answer in milliseconds; cost_usd is priced usage only, unpriced_requests counts the rest.
CREATE VIEW IF NOT EXISTS {db}.cost_per_user_daily AS
SELECT day, user_id,
       sum(requests) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(cache_read_tokens) AS cache_read_tokens,
       sum(cache_write_tokens) AS cache_write_tokens,
       sum(output_tokens) AS output_tokens,
       sum(reasoning_tokens) AS reasoning_tokens,
       sum(cost_usd) AS cost_usd,
       sum(unpriced_requests) AS unpriced_requests
FROM {db}.usage_daily
GROUP BY day, user_id;

CREATE VIEW IF NOT EXISTS {db}.cost_per_user_weekly AS
SELECT toMonday(day) AS week, user_id,
       sum(requests) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       sum(unpriced_requests) AS unpriced_requests
FROM {db}.usage_daily
GROUP BY week, user_id;

CREATE VIEW IF NOT EXISTS {db}.cost_per_user_monthly AS
SELECT toStartOfMonth(day) AS month, user_id,
       sum(requests) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       sum(unpriced_requests) AS unpriced_requests
FROM {db}.usage_daily
GROUP BY month, user_id;

CREATE VIEW IF NOT EXISTS {db}.top_users_30d AS
SELECT user_id,
       sum(cost_usd) AS cost_usd,
       sum(requests) AS requests,
       sum(input_tokens) + sum(output_tokens) AS tokens,
       sum(unpriced_requests) AS unpriced_requests
FROM {db}.usage_daily
WHERE day >= today() - 29
GROUP BY user_id
ORDER BY cost_usd DESC;

CREATE VIEW IF NOT EXISTS {db}.cost_per_model_daily AS
SELECT day, provider, model,
       sum(requests) AS requests,
       sum(input_tokens) AS input_tokens,
       sum(cache_read_tokens) AS cache_read_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       sum(unpriced_requests) AS unpriced_requests
FROM {db}.usage_daily
GROUP BY day, provider, model;

-- Calls that could not be priced, by model and reason: what an operator must add a price for.
CREATE VIEW IF NOT EXISTS {db}.unpriced_usage AS
SELECT provider,
       if(response_model != '', response_model, request_model) AS model,
       pricing_status,
       sum(sign) AS requests,
       sum(toInt64(input_tokens) * sign) AS input_tokens,
       sum(toInt64(output_tokens) * sign) AS output_tokens,
       min(event_time) AS first_seen,
       max(event_time) AS last_seen
FROM {db}.usage_events
WHERE cost_usd IS NULL
GROUP BY provider, model, pricing_status
HAVING requests != 0;
