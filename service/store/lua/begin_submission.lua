-- Claims an Idempotency-Key for a new submission, atomically with creating that submission
-- (its fields follow the named arguments as pairs). `take_over` names an earlier owner the key
-- may be taken from (its attempt failed or stalled). Returns the key's owner.
-- The submission, and its own endpoint, expire with the key (`ttl_s`) unless a task is linked
-- to it first (common.lua link_submission): one that never gets a task (its create failed, was
-- refused, or its answer was lost and no callback came) leaves nothing behind. While its
-- attempt runs, each heartbeat starts the time again (note_submission.lua).

local ttl = tonumber(A.ttl_s)
if not ttl or ttl < 1 or ttl > 1e9 or ttl % 1 ~= 0 then
  return redis.error_reply('ttl_s must be a whole number of seconds, from 1 to 1000000000')
end
if A.idempotency_key ~= '' then
  local idem_key = key_idempotency(prefix, A.idempotency_key)
  local existing = redis.call('GET', idem_key)
  if existing and existing ~= A.take_over then return existing end
  redis.call('SET', idem_key, A.submission_id, 'EX', ttl)
end
local sub_key = key_submission(prefix, A.submission_id)
redis.call('HSET', sub_key, unpack(ARGV, ARG_COUNT + 1))
redis.call('EXPIRE', sub_key, ttl)
-- A task's own endpoint is a subscription of that one submission's task, made with it, so the
-- task's first event already finds it. Not listed among the subscriptions.
local endpoint_url = redis.call('HGET', sub_key, 'webhook_url')
if endpoint_url then
  local endpoint = key_webhook(prefix, task_endpoint(A.submission_id))
  redis.call('HSET', endpoint, 'id', task_endpoint(A.submission_id), 'url', endpoint_url, 'kind', 'task',
    'enabled', '1', 'submission_id', A.submission_id, 'created_at', tostring(now_ms()))
  redis.call('EXPIRE', endpoint, ttl)
end
return A.submission_id
