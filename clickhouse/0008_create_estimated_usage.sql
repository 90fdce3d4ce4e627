-- Usage whose token counts were estimated (backfilled from chat logs with an offline tokenizer),
-- per day and model, net of corrections: shown apart so it is never taken for reported usage.
-- (Qualified names: the bare ones would mean the SELECT's own aliases.)
CREATE VIEW IF NOT EXISTS {db}.estimated_usage AS
SELECT toDate(e.event_time) AS day,
       e.provider AS provider,
       if(e.response_model != '', e.response_model, e.request_model) AS model,
       e.service_name AS service_name,
       sum(e.sign) AS requests,
       sum(toInt64(e.input_tokens) * e.sign) AS input_tokens,
       sum(toInt64(e.output_tokens) * e.sign) AS output_tokens,
       sum(toDecimal128(ifNull(e.cost_usd, toDecimal64(0, 12)), 12) * e.sign) AS cost_usd,
       sum(if(e.cost_usd IS NULL, toInt64(e.sign), 0)) AS unpriced_requests
FROM {db}.usage_events AS e
WHERE e.usage_status = 'estimated'
GROUP BY day, provider, model, service_name
HAVING requests != 0;
