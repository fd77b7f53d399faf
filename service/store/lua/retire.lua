-- Retention: a task final, its files settled and its deliveries settled, for `retention_ms`, is
-- moved out of Redis in two calls with its view written to storage between them.
--
-- mode 'check':  {'keep', reason} or {'ready', fingerprint, task, tracks, artifacts, history,
--                submission, deliveries} (hashes as flat arrays; each delivery a flat array).
-- mode 'remove': {'removed'} or {'kept', reason}. Removes every key of the task, and its members
--                of the indexes and listings, only if the fingerprint is still the one `check`
--                gave: a callback, a download or a delivery in between leaves everything as it is.
-- Every check runs before the first write.

local task_id, now, mode = A.task_id, tonumber(A.now), A.mode
local task_key = key_task(prefix, task_id)
local history_key = key_history(prefix, task_id)
local deliveries_key = key_task_deliveries(prefix, task_id)

local task = redis.call('HGETALL', task_key)
if #task == 0 then return {'keep', 'no such task'} end
local fields = {}
for i = 1, #task, 2 do fields[task[i]] = task[i + 1] end
if not TERMINAL[fields.status] then return {'keep', 'not final'} end
if redis.call('ZSCORE', key_polls_due(prefix), task_id) then return {'keep', 'a poll is due'} end

local artifacts = redis.call('HGETALL', key_artifacts(prefix, task_id))
local settled_at = tonumber(fields.updated_at) or 0
for i = 2, #artifacts, 2 do
  local read, artifact = pcall(cjson.decode, artifacts[i])
  if not read or type(artifact) ~= 'table' then return {'keep', 'a file record is unreadable'} end
  if not SETTLED[artifact.state or 'waiting'] then return {'keep', 'files not settled'} end
  settled_at = math.max(settled_at, tonumber(artifact.stored_at) or 0)
end
local history = redis.call('LRANGE', history_key, 0, -1)
local read_last, last = pcall(cjson.decode, history[#history] or '')
if read_last and type(last) == 'table' and tonumber(last.at) then settled_at = math.max(settled_at, tonumber(last.at)) end

local ids = redis.call('ZRANGE', deliveries_key, 0, -1)
local deliveries = {}
for _, id in ipairs(ids) do
  local delivery = redis.call('HGETALL', key_delivery(prefix, id))
  local d = {}
  for i = 1, #delivery, 2 do d[delivery[i]] = delivery[i + 1] end
  if d.state ~= nil and d.state ~= 'delivered' and d.state ~= 'failed' then
    return {'keep', 'deliveries not settled'}
  end
  settled_at = math.max(settled_at, tonumber(d.settled_at) or 0)
  -- Its attempts go into the archive with it (each a JSON entry: none holds a newline).
  local attempts = redis.call('LRANGE', key_delivery_attempts(prefix, id), 0, -1)
  delivery[#delivery + 1] = 'attempt_log'
  delivery[#delivery + 1] = table.concat(attempts, '\n')
  deliveries[#deliveries + 1] = delivery
end
if settled_at + tonumber(A.retention_ms) > now then return {'keep', 'settled too recently'} end

local tracks = redis.call('HGETALL', key_tracks(prefix, task_id))
local submission = {}
if fields.submission_id then submission = redis.call('HGETALL', key_submission(prefix, fields.submission_id)) end

-- Everything read, in the order read: unchanged data gives the same text (a hash's HGETALL order
-- is stable while it is not written).
local parts = {}
for _, list in ipairs({task, artifacts, history, tracks, submission}) do
  parts[#parts + 1] = table.concat(list, '\0')
end
for _, delivery in ipairs(deliveries) do parts[#parts + 1] = table.concat(delivery, '\0') end
local fingerprint = redis.sha1hex(table.concat(parts, '\1'))

if mode == 'check' then
  return {'ready', fingerprint, task, tracks, artifacts, history, submission, deliveries}
end
if mode ~= 'remove' then return {'keep', 'unknown mode'} end
if fingerprint ~= A.fingerprint then return {'kept', 'changed since it was read'} end

for _, id in ipairs(ids) do
  local sub = redis.call('HGET', key_delivery(prefix, id), 'subscription_id')
  if sub then redis.call('ZREM', key_webhook_deliveries(prefix, sub), id) end
  redis.call('DEL', key_delivery(prefix, id), key_delivery_attempts(prefix, id))
end
if fields.index_member then
  redis.call('ZREM', key_index_all(prefix), fields.index_member)
  redis.call('ZREM', key_index_status(prefix, fields.status), fields.index_member)
end
if fields.archive then redis.call('HINCRBY', key_archives(prefix), fields.archive, -1) end
local submission_id = fields.submission_id
-- The submission is this task's only if it says so (a second task may name it: a create retried
-- after its answer was lost); its own endpoint (a subscription of this one task) goes with it.
if submission_id and redis.call('HGET', key_submission(prefix, submission_id), 'task_id') == task_id then
  local endpoint = task_endpoint(submission_id)
  redis.call('DEL', key_submission(prefix, submission_id), key_webhook(prefix, endpoint),
    key_webhook_queues(prefix, endpoint), key_webhook_deliveries(prefix, endpoint),
    key_subscription_due(prefix, endpoint))
  redis.call('ZREM', key_deliveries_due(prefix), endpoint)
end
redis.call('DEL', task_key, history_key, deliveries_key, key_tracks(prefix, task_id),
  key_artifacts(prefix, task_id))
return {'removed'}
