-- Tells downstream that a task's files are not all stored and the upstream deletes them soon:
-- `task.files_expiring`, once per warning (`window`: 72h, 24h), listing the files not stored.
-- Returns 1 when told now, 0 when there is nothing to tell (all stored, told already, gone).

local task_id, now = A.task_id, tonumber(A.now)
local task_key = key_task(prefix, task_id)
local status = redis.call('HGET', task_key, 'status')
if not status then return 0 end
local told_field = 'expiring_told:' .. A.window
if redis.call('HEXISTS', task_key, told_field) == 1 then return 0 end
local at_risk = {}
for _, raw in ipairs(redis.call('HVALS', key_artifacts(prefix, task_id))) do
  local read, artifact = pcall(cjson.decode, raw)
  if read and type(artifact) == 'table' and artifact.state ~= 'stored' then
    at_risk[#at_risk + 1] = {name = artifact.name, kind = artifact.kind, track_id = artifact.track_id,
      state = artifact.state, last_error = artifact.last_error}
  end
end
if #at_risk == 0 then return 0 end
redis.call('HSET', task_key, told_field, now)
append_event(task_key, task_id, {'type', 'task.files_expiring', 'at', now, 'source', 'download',
  'status', status, 'files', cjson.encode(at_risk), 'expires_at', A.expires_at,
  'reason', A.window .. ' before the upstream deletes the files'}, A.events_max)
return 1
