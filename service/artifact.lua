-- Change one artifact atomically. ARGV: prefix, mode, task_id, name, now_ms, value, worker.
--   claim   value = lease ms: take a waiting artifact (or one whose lease expired) for download
--   renew   value = lease ms: extend the lease of a download in progress
--   update  value = JSON fields to merge; leaving `downloading` ends the lease
-- `worker` is the claim's token: renew and update refuse a caller whose claim is no longer current.
-- Returns {'claimed'|'ok', artifact JSON, task created_at, task family} or
-- {'missing'|'done'|'busy'|'early'|'lost', state}.
local prefix = ARGV[1]
__COMMON__

local mode, task_id, name, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local key = key_artifacts(prefix, task_id)
local due = key_downloads_due(prefix)
local DOWNLOAD_GRACE_MS = __DOWNLOAD_GRACE_MS__
local member = task_id .. ' ' .. name
local raw = redis.call('HGET', key, name)
if not raw then return {'missing', ''} end
local artifact = cjson.decode(raw)

if mode == 'claim' then
  local state = artifact.state
  if state == 'stored' or state == 'expired' or state == 'failed' then return {'done', state} end
  if state == 'downloading' and (tonumber(artifact.lease_until) or 0) > now then return {'busy', state} end
  -- A retry waits for its time (a second early, for the scheduler's precision), whoever asks.
  if state == 'waiting' and (tonumber(artifact.next_try_at) or 0) > now + 1000 then return {'early', state} end
  artifact.state = 'downloading'
  artifact.attempts = (tonumber(artifact.attempts) or 0) + 1
  artifact.lease_until = now + tonumber(ARGV[6])
  artifact.worker = ARGV[7] .. '#' .. artifact.attempts
  redis.call('ZADD', due, artifact.lease_until, member)
elseif mode == 'renew' then
  if artifact.state ~= 'downloading' or artifact.worker ~= ARGV[7] then return {'lost', artifact.state} end
  artifact.lease_until = now + tonumber(ARGV[6])
  redis.call('ZADD', due, artifact.lease_until, member)
else
  if ARGV[7] ~= '' and (artifact.state ~= 'downloading' or artifact.worker ~= ARGV[7]) then
    return {'lost', artifact.state}
  end
  for k, v in pairs(cjson.decode(ARGV[6])) do artifact[k] = v end
  if artifact.state ~= 'downloading' then
    artifact.lease_until = nil
    artifact.worker = nil
  end
  -- A waiting artifact must be retried by its next try (plus grace); a settled one is off the list.
  if artifact.state == 'waiting' then
    redis.call('ZADD', due, (tonumber(artifact.next_try_at) or now) + DOWNLOAD_GRACE_MS, member)
  elseif artifact.state ~= 'downloading' then
    redis.call('ZREM', due, member)
  end
end
local encoded = cjson.encode(artifact)
redis.call('HSET', key, name, encoded)
local task = redis.call('HMGET', key_task(prefix, task_id), 'created_at', 'family')
return {mode == 'claim' and 'claimed' or 'ok', encoded, task[1] or '', task[2] or ''}
