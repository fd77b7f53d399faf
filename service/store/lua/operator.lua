-- An operator's action on one task (the dashboard's buttons), recorded in its history with
-- source `operator`:
--   poll      ask the upstream about it now
--   download  fetch file `name` again now: a waiting file is tried at once, a failed one goes
--             back to waiting first (a stored, expired or downloading one is left as it is)
--   note      only the history entry, saying `name` (an action done by another script)
-- Returns queued | missing | the state that stopped it.

local task_id, now = A.task_id, tonumber(A.now)
if redis.call('EXISTS', key_task(prefix, task_id)) == 0 then return 'missing' end
local entry = {stage = 'operator', source = 'operator', outcome = 'applied', at = now}
if A.mode == 'poll' then
  redis.call('ZADD', key_polls_due(prefix), now, task_id)
  entry.msg = 'poll now'
elseif A.mode == 'download' then
  local key = key_artifacts(prefix, task_id)
  local raw = redis.call('HGET', key, A.name)
  if not raw then return 'missing' end
  local read, artifact = pcall(cjson.decode, raw)
  if not read or type(artifact) ~= 'table' then return 'unreadable' end
  if artifact.state ~= 'waiting' and artifact.state ~= 'failed' then return tostring(artifact.state) end
  artifact.state, artifact.next_try_at, artifact.refused = 'waiting', now, nil
  redis.call('HSET', key, A.name, cjson.encode(artifact))
  reindex_archive(task_id)
  local member = task_id .. ' ' .. A.name
  redis.call('RPUSH', key_downloads_new(prefix), member)  -- the dispatcher queues its job
  redis.call('ZADD', key_downloads_due(prefix), now + DOWNLOAD_GRACE_MS, member)
  entry.msg = 'download ' .. A.name .. ' now'
elseif A.mode == 'note' then
  entry.msg = utf8_head(A.name, HISTORY_MSG_BYTES)  -- what an operator did elsewhere (a redelivery)
else
  return 'unknown'
end
append_history(task_id, entry, tonumber(A.history_max))
return 'queued'
