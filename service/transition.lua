-- Apply a batch of stage events atomically, in one round trip: for each event, create the task
-- if unknown, decide the outcome from the lifecycle table (rendered from service/states.py),
-- move status and indexes, record stage times (and skipped stages), merge tracks and
-- artifacts, append the history entry and the raw-log entry.
--
-- Keys are built here from the templates of service/keys.py (rendered below) rather than
-- passed in KEYS, because one call serves events of many tasks; Tapedeck runs on standalone
-- or Sentinel-managed Redis, not Redis Cluster, where that would cross slots.
--
-- ARGV: prefix, history max, raw-log max, poll deadlines after pending/text/first (ms), then per event:
--   task_id, stage, source, now_ms, family, code, msg, error, result_json, submission id,
--   #track pairs, #artifact pairs, #raw-log field pairs, then those pairs.
-- Returns, per event: {outcome, status_before, status_after, created (0|1), new artifact names...}.

local prefix, history_max, rawlog_max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local POLL_AFTER = {pending = tonumber(ARGV[4]), text = tonumber(ARGV[5]), first = tonumber(ARGV[6])}
local FIRST_EVENT = 7
local DOWNLOAD_GRACE_MS = __DOWNLOAD_GRACE_MS__
__COMMON__
local TRANSITIONS = __TRANSITIONS__
local SUCCESS_STAGES = __SUCCESS_STAGES__
local FIXED_FIELDS = 13

-- Tracks and artifacts arrive as name/JSON pairs already encoded by Python, so the common case
-- (first sight) costs one HSETNX and no JSON work here.
local function merge_tracks(tracks_key, from, to, overwrite)
  for i = from, to, 2 do
    local id, encoded = ARGV[i], ARGV[i + 1]
    if redis.call('HSETNX', tracks_key, id, encoded) == 0 and overwrite then
      local merged = cjson.decode(redis.call('HGET', tracks_key, id))
      for k, v in pairs(cjson.decode(encoded)) do
        if v ~= cjson.null and v ~= '' then merged[k] = v end
      end
      redis.call('HSET', tracks_key, id, cjson.encode(merged))
    end
  end
end

-- A new artifact also goes to the downloads outbox, in this same atomic step, so the callback
-- ack never waits on a job queue and no artifact is ever queued twice.
local function add_artifacts(task_id, artifacts_key, from, to, reply, now)
  local outbox, due = {}, {}
  for i = from, to, 2 do
    if redis.call('HSETNX', artifacts_key, ARGV[i], ARGV[i + 1]) == 1 then
      reply[#reply + 1] = ARGV[i]
      local member = task_id .. ' ' .. ARGV[i]
      outbox[#outbox + 1] = member
      due[#due + 1] = now + DOWNLOAD_GRACE_MS
      due[#due + 1] = member
    end
  end
  if #outbox > 0 then
    redis.call('RPUSH', key_downloads_new(prefix), unpack(outbox))
    redis.call('ZADD', key_downloads_due(prefix), unpack(due))
  end
end

local function apply(at)
  local task_id, stage, source, now = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  local family, code, msg, error_text = ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
  local result_json, submission_id = ARGV[at + 8], ARGV[at + 9]
  local tracks_from = at + FIXED_FIELDS
  local artifacts_from = tracks_from + 2 * tonumber(ARGV[at + 10])
  local raw_from = artifacts_from + 2 * tonumber(ARGV[at + 11])
  local next_at = raw_from + 2 * tonumber(ARGV[at + 12])

  local task_key = key_task(prefix, task_id)
  local status, member, created = ensure_task(task_key, task_id, now, family)
  if submission_id ~= '' then
    link_submission(task_key, task_id, submission_id, false)
  end

  -- A lost task is judged from the stage it had reached (states.decide); only progress revives it.
  local judged = status
  if status == 'lost' then
    judged = 'pending'
    for _, reached in ipairs({'text', 'first'}) do
      local record = redis.call('HGET', task_key, 'stage:' .. reached)
      if record and not string.find(record, 'skipped', 1, true) then judged = reached end
    end
  end
  local decision = TRANSITIONS[judged .. '|' .. stage]
  if not decision then
    error('no transition for status ' .. judged .. ' and stage ' .. stage)
  end
  local outcome, new_status = decision[1], decision[2]
  if status == 'lost' and outcome ~= 'applied' then new_status = 'lost' end
  local reply = {outcome, status, new_status, created}

  if outcome == 'applied' then
    if new_status ~= status then
      redis.call('ZREM', key_index_status(prefix, status), member)
      redis.call('ZADD', key_index_status(prefix, new_status), 0, member)
    end
    redis.call('HSETNX', task_key, 'stage:' .. stage, cjson.encode({at = now, source = source}))
    if stage == 'error' then
      redis.call('HSET', task_key, 'error_code', code, 'error_message', error_text ~= '' and error_text or msg)
    else
      for _, earlier in ipairs(SUCCESS_STAGES) do
        if earlier == stage then break end
        redis.call('HSETNX', task_key, 'stage:' .. earlier, '{"skipped":true}')
      end
    end
    merge_tracks(key_tracks(prefix, task_id), tracks_from, artifacts_from - 1, true)
    add_artifacts(task_id, key_artifacts(prefix, task_id), artifacts_from, raw_from - 1, reply, now)
    if result_json ~= '' then redis.call('HSET', task_key, 'result', result_json) end
    redis.call('HSET', task_key, 'status', new_status, 'updated_at', now, 'last_event_at', now, 'poll_streak', 0)
    -- The next poll is due when this stage has had its time to move on; a finished task has none.
    if POLL_AFTER[new_status] then
      redis.call('ZADD', key_polls_due(prefix), now + POLL_AFTER[new_status], task_id)
    else
      redis.call('ZREM', key_polls_due(prefix), task_id)
    end
  else
    if outcome ~= 'duplicate' then
      -- A stale or contradicting stage moves nothing, but the files it names exist upstream
      -- and expire all the same: keep what is new, overwrite nothing.
      merge_tracks(key_tracks(prefix, task_id), tracks_from, artifacts_from - 1, false)
      add_artifacts(task_id, key_artifacts(prefix, task_id), artifacts_from, raw_from - 1, reply, now)
    end
    redis.call('HSET', task_key, 'last_event_at', now)
  end

  local entry = {stage = stage, source = source, outcome = outcome, at = now,
    from = status, to = new_status, code = tonumber(code), msg = msg}
  if next_at > raw_from then
    entry.raw_id = redis.call('XADD', key_raw_log(prefix), 'MAXLEN', '~', rawlog_max, '*',
      'outcome', outcome, 'task_status', new_status, unpack(ARGV, raw_from, next_at - 1))
  end
  local history_key = key_history(prefix, task_id)
  redis.call('RPUSH', history_key, cjson.encode(entry))
  redis.call('LTRIM', history_key, -history_max, -1)
  return reply, next_at
end

local replies = {}
local at = FIRST_EVENT
while at <= #ARGV do
  local reply
  reply, at = apply(at)
  replies[#replies + 1] = reply
end
return replies
