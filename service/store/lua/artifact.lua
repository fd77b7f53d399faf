-- Change one artifact atomically, following the file lifecycle of core/lifecycle.py.
--   claim   value = lease ms: take the artifact for download, as CLAIMS decides
--   renew   value = lease ms: extend the lease of a download in progress
--   update  value = JSON fields to merge; its `state` must be one FINISHES allows
--   release value = unused: a worker stopping mid-download hands the file back, waiting and due
--           now, so another worker takes it at once instead of when the lease runs out
-- `worker` is the claim's token: renew and update refuse a caller whose claim is no longer current.
-- Returns {'claimed'|'ok', artifact JSON, task created_at, task family} or
-- {'missing'|'done'|'busy'|'early'|'lost'|'refused', state}. Every check precedes every write.

local mode, task_id, name, now = A.mode, A.task_id, A.name, tonumber(A.now)
local history_max = tonumber(A.history_max)
if not history_max then return redis.error_reply('history_max must be a number') end  -- before any write
local key = key_artifacts(prefix, task_id)

local function holds_claim_of(artifact, worker, at)
  return artifact.state == 'downloading' and artifact.worker == worker .. '#' .. tostring(artifact.attempts)
    and (tonumber(artifact.lease_until) or 0) > at
end
local due = key_downloads_due(prefix)
local member = task_id .. ' ' .. name
local raw = redis.call('HGET', key, name)
if not raw then return {'missing', ''} end
local decoded, artifact = pcall(cjson.decode, raw)
if not decoded or type(artifact) ~= 'table' then
  -- Only a bug or a hand edit makes a record unreadable; no job can do anything with it, so it
  -- is failed for good, with what it held, instead of erroring (and being retried) forever.
  redis.call('HSET', key, name, cjson.encode({name = name, state = 'failed', at = now,
    last_error = 'the stored record of this file was unreadable', unreadable = utf8_head(raw, 1000)}))
  redis.call('ZREM', due, member)
  reindex_archive(task_id)
  return {'corrupt', ''}
end
-- A state the lifecycle does not know (or none) finds no row in CLAIMS: refused, never an error.
local state = type(artifact.state) == 'string' and artifact.state or ''
local holds = state == 'downloading' and artifact.worker == A.worker

if mode == 'claim' and holds_claim_of(artifact, A.worker, now) then
  -- A re-send of this worker's claim after a lost reply: the claim it already holds.
  local task = redis.call('HMGET', key_task(prefix, task_id), 'created_at', 'family')
  return {'claimed', raw, task[1] or '', task[2] or ''}
elseif mode == 'claim' then
  local leased = (tonumber(artifact.lease_until) or 0) > now
  local early = (tonumber(artifact.next_try_at) or 0) > now + 1000
  local outcome = CLAIMS[state .. '|' .. (leased and 1 or 0) .. '|' .. (early and 1 or 0)]
  if not outcome then
    -- A state the lifecycle does not know: no job can move it, so none is queued for it again.
    redis.call('ZREM', due, member)
    return {'refused', state}
  end
  if outcome ~= 'claimed' then return {outcome, state} end
  artifact.state = 'downloading'
  artifact.attempts = (tonumber(artifact.attempts) or 0) + 1
  artifact.lease_until = now + tonumber(A.value)
  artifact.worker = A.worker .. '#' .. artifact.attempts
  redis.call('ZADD', due, artifact.lease_until, member)
elseif mode == 'renew' then
  if not holds then return {'lost', state} end
  artifact.lease_until = now + tonumber(A.value)
  redis.call('ZADD', due, artifact.lease_until, member)
elseif mode == 'release' then
  -- Only the claim's own holder: a lease that has already passed to another worker stays theirs.
  if not holds then return {'lost', state} end
  artifact.state, artifact.next_try_at, artifact.released_at = 'waiting', now, now
  artifact.lease_until, artifact.worker = nil, nil
  redis.call('ZADD', due, now, member)  -- the next sweep of any dispatcher queues it again
elseif mode ~= 'update' then
  return {'refused', state}
else
  if not holds then return {'lost', state} end
  local read, fields = pcall(cjson.decode, A.value)
  if not read or type(fields) ~= 'table' or not FINISHES[fields.state] then return {'refused', state} end
  -- Why, for the metrics only (a short code; the record keeps the whole error in last_error).
  local reason = fields.metric_reason
  fields.metric_reason = nil
  for k, v in pairs(fields) do artifact[k] = v end
  metric_add('tapedeck_downloads', {artifact.state == 'waiting' and 'retry' or artifact.state,
    reason or (artifact.state == 'stored' and 'none' or 'other')})
  -- Each download attempt joins the task's history (the dashboard's timeline shows them all); a
  -- file retried again and again is one entry counting its tries, so retries until expiry never
  -- push the submission and the callbacks out of the capped history.
  local said = artifact.state == 'waiting' and ('retry: ' .. tostring(artifact.last_error or '')) or artifact.state
  local entry = {stage = 'download', source = 'download', outcome = artifact.state, at = now, file = name,
    tries = 1, msg = utf8_head(name .. ' ' .. said, HISTORY_MSG_BYTES)}
  local history_key = key_history(prefix, task_id)
  local read_last, last = pcall(cjson.decode, redis.call('LINDEX', history_key, -1) or '')
  if read_last and type(last) == 'table' and last.stage == 'download' and last.file == name
      and last.outcome == 'waiting' then
    entry.tries = (tonumber(last.tries) or 1) + 1
    redis.call('LSET', history_key, -1, cjson.encode(entry))
  else
    append_history(task_id, entry, history_max)
  end
  if artifact.state == 'stored' and tonumber(artifact.bytes) then
    metric_add('tapedeck_downloaded_bytes', {}, math.floor(tonumber(artifact.bytes)))
  end
  artifact.lease_until = nil
  artifact.worker = nil
  -- A waiting artifact must be retried by its next try (plus grace); a settled one is off the list.
  if artifact.state == 'waiting' then
    redis.call('ZADD', due, (tonumber(artifact.next_try_at) or now) + DOWNLOAD_GRACE_MS, member)
  else
    redis.call('ZREM', due, member)
  end
end
local encoded = cjson.encode(artifact)
redis.call('HSET', key, name, encoded)
if mode == 'update' or mode == 'release' then reindex_archive(task_id) end  -- a claim or renew leaves it
if mode == 'update' and SETTLED[artifact.state] then tell_archive(task_id, now, A.events_max) end
local task = redis.call('HMGET', key_task(prefix, task_id), 'created_at', 'family')
return {mode == 'claim' and 'claimed' or 'ok', encoded, task[1] or '', task[2] or ''}
