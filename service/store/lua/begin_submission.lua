-- Claims an Idempotency-Key for a new submission, atomically with creating that submission
-- (its fields follow the named arguments as pairs). `take_over` names an earlier owner the key
-- may be taken from (its attempt failed or stalled). Returns the key's owner.

if A.idempotency_key ~= '' then
  local idem_key = key_idempotency(prefix, A.idempotency_key)
  local existing = redis.call('GET', idem_key)
  if existing and existing ~= A.take_over then return existing end
  redis.call('SET', idem_key, A.submission_id, 'EX', tonumber(A.ttl_s))
end
redis.call('HSET', key_submission(prefix, A.submission_id), unpack(ARGV, ARG_COUNT + 1))
-- A task's own endpoint is a subscription of that one submission's task, made with it, so the
-- task's first event already finds it. Not listed among the subscriptions.
local endpoint_url = redis.call('HGET', key_submission(prefix, A.submission_id), 'webhook_url')
if endpoint_url then
  redis.call('HSET', key_webhook(prefix, 'ept_' .. string.sub(A.submission_id, 5)), 'id',
    'ept_' .. string.sub(A.submission_id, 5), 'url', endpoint_url, 'kind', 'task', 'enabled', '1',
    'submission_id', A.submission_id, 'created_at', tostring(now_ms()))
end
return A.submission_id
