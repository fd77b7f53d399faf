-- Writes fields of a submission still in progress, only if it still exists: a write after it
-- expired must not leave a partial hash that no TTL or retention ever removes. Then, unless a
-- task is linked (it lives as long as the task: common.lua link_submission), its time to live
-- starts again, and its Idempotency-Key's with it while the key still names it (a retry reads
-- the submission through the key: one must not outlive the other). `note` (a heartbeat, a lost
-- answer) keeps its own endpoint as long; `end` (its create failed or was refused: no task will
-- come of this attempt) removes the endpoint now.
-- The fields follow the named arguments as pairs. Returns 1 if written, 0 if the submission is gone.

local ttl = tonumber(A.ttl_s)
if not ttl or ttl < 1 or ttl > 1e9 or ttl % 1 ~= 0 then
  return redis.error_reply('ttl_s must be a whole number of seconds, from 1 to 1000000000')
end
if A.mode ~= 'note' and A.mode ~= 'end' then return redis.error_reply('mode must be note or end') end
if (#ARGV - ARG_COUNT) % 2 ~= 0 then return redis.error_reply('fields must come as name/value pairs') end
local sub_key = key_submission(prefix, A.submission_id)
if redis.call('EXISTS', sub_key) == 0 then return 0 end
if #ARGV > ARG_COUNT then redis.call('HSET', sub_key, unpack(ARGV, ARG_COUNT + 1)) end
if redis.call('HEXISTS', sub_key, 'task_id') == 1 then return 1 end
local endpoint = key_webhook(prefix, task_endpoint(A.submission_id))
redis.call('EXPIRE', sub_key, ttl)
local key_name = redis.call('HGET', sub_key, 'idempotency_key')
if key_name and redis.call('GET', key_idempotency(prefix, key_name)) == A.submission_id then
  redis.call('EXPIRE', key_idempotency(prefix, key_name), ttl)
end
if A.mode == 'end' then
  redis.call('DEL', endpoint)
else
  redis.call('EXPIRE', endpoint, ttl)
end
return 1
