-- Apply one stage event to one task, atomically, in one round trip.
-- Creates the task if unknown, decides the outcome from the lifecycle table rendered from
-- service/states.py, moves status and indexes, records stage times (and skipped stages),
-- merges tracks and artifacts, appends the history entry and the raw-log entry.
-- Returns {outcome, status_before, status_after, created (0|1), new artifact names...}.

local TRANSITIONS = __TRANSITIONS__
local SUCCESS_STAGES = __SUCCESS_STAGES__
local STATUS_KEY = __STATUS_KEY__ -- status -> index into KEYS of its status index

local task_key, history_key, tracks_key, artifacts_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local index_all, rawlog_key = KEYS[5], KEYS[6]

local task_id, stage, source, now, family = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local code, msg, error_text = ARGV[6], ARGV[7], ARGV[8]
local tracks_json, artifacts_json, result_json = ARGV[9], ARGV[10], ARGV[11]
local history_max, rawlog_max = tonumber(ARGV[12]), tonumber(ARGV[13])
local RAW_FIELDS_FROM = 14

local created = 0
local status = redis.call('HGET', task_key, 'status')
if not status then
  created = 1
  status = 'pending'
  local member = string.format('%013d', now) .. ':' .. task_id
  redis.call('HSET', task_key, 'task_id', task_id, 'status', status, 'created_at', now,
    'updated_at', now, 'index_member', member)
  redis.call('ZADD', index_all, 0, member)
  redis.call('ZADD', KEYS[STATUS_KEY[status]], 0, member)
end
if family ~= '' then
  redis.call('HSETNX', task_key, 'family', family)
end

local decision = TRANSITIONS[status .. '|' .. stage]
if not decision then
  return redis.error_reply('no transition for status ' .. status .. ' and stage ' .. stage)
end
local outcome, new_status = decision[1], decision[2]
local new_artifacts = {}

local function merge_tracks()
  for _, track in ipairs(cjson.decode(tracks_json)) do
    local old = redis.call('HGET', tracks_key, track.id)
    if old then
      local merged = cjson.decode(old)
      for k, v in pairs(track) do
        if v ~= cjson.null and v ~= '' then merged[k] = v end
      end
      track = merged
    end
    redis.call('HSET', tracks_key, track.id, cjson.encode(track))
  end
end

local function merge_artifacts()
  for _, artifact in ipairs(cjson.decode(artifacts_json)) do
    local old = redis.call('HGET', artifacts_key, artifact.name)
    if not old then
      artifact.state = 'waiting'
      artifact.discovered_at = now
      redis.call('HSET', artifacts_key, artifact.name, cjson.encode(artifact))
      new_artifacts[#new_artifacts + 1] = artifact.name
    else
      local current = cjson.decode(old)
      if current.url ~= artifact.url and current.state ~= 'stored' then
        current.url = artifact.url
        redis.call('HSET', artifacts_key, artifact.name, cjson.encode(current))
      end
    end
  end
end

if outcome == 'applied' then
  if new_status ~= status then
    local member = redis.call('HGET', task_key, 'index_member')
    redis.call('ZREM', KEYS[STATUS_KEY[status]], member)
    redis.call('ZADD', KEYS[STATUS_KEY[new_status]], 0, member)
    redis.call('HSET', task_key, 'status', new_status)
  end
  redis.call('HSET', task_key, 'updated_at', now)
  redis.call('HSETNX', task_key, 'stage:' .. stage, cjson.encode({at = now, source = source}))
  if stage == 'error' then
    redis.call('HSET', task_key, 'error_code', code, 'error_message', error_text ~= '' and error_text or msg)
  else
    for _, earlier in ipairs(SUCCESS_STAGES) do
      if earlier == stage then break end
      redis.call('HSETNX', task_key, 'stage:' .. earlier, '{"skipped":true}')
    end
  end
  if tracks_json ~= '' then merge_tracks() end
  if artifacts_json ~= '' then merge_artifacts() end
  if result_json ~= '' then redis.call('HSET', task_key, 'result', result_json) end
end
redis.call('HSET', task_key, 'last_event_at', now)

local raw_id = ''
if #ARGV >= RAW_FIELDS_FROM then
  raw_id = redis.call('XADD', rawlog_key, 'MAXLEN', '~', rawlog_max, '*',
    'outcome', outcome, 'task_status', new_status, unpack(ARGV, RAW_FIELDS_FROM))
end

local entry = {stage = stage, source = source, outcome = outcome, at = now,
  from = status, to = new_status, code = tonumber(code), msg = msg}
if raw_id ~= '' then entry.raw_id = raw_id end
redis.call('RPUSH', history_key, cjson.encode(entry))
redis.call('LTRIM', history_key, -history_max, -1)

local reply = {outcome, status, new_status, created}
for _, name in ipairs(new_artifacts) do reply[#reply + 1] = name end
return reply
