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
local result_json = ARGV[9]
local history_max, rawlog_max = tonumber(ARGV[10]), tonumber(ARGV[11])
-- ARGV[12..14]: how many track pairs, artifact pairs and raw-log field pairs follow, in that order.
local track_pairs, artifact_pairs, raw_pairs = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local tracks_from = 15
local artifacts_from = tracks_from + 2 * track_pairs
local raw_from = artifacts_from + 2 * artifact_pairs

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

-- Tracks and artifacts arrive as name/JSON pairs (ARGV), already encoded by Python, so the
-- common case (first sight) costs one HSETNX and no JSON work here.
local function merge_tracks(pairs_from, pairs_to)
  for i = pairs_from, pairs_to, 2 do
    local id, encoded = ARGV[i], ARGV[i + 1]
    if redis.call('HSETNX', tracks_key, id, encoded) == 0 then
      local merged = cjson.decode(redis.call('HGET', tracks_key, id))
      for k, v in pairs(cjson.decode(encoded)) do
        if v ~= cjson.null and v ~= '' then merged[k] = v end
      end
      redis.call('HSET', tracks_key, id, cjson.encode(merged))
    end
  end
end

local function add_artifacts(pairs_from, pairs_to)
  for i = pairs_from, pairs_to, 2 do
    if redis.call('HSETNX', artifacts_key, ARGV[i], ARGV[i + 1]) == 1 then
      new_artifacts[#new_artifacts + 1] = ARGV[i]
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
  merge_tracks(tracks_from, artifacts_from - 1)
  add_artifacts(artifacts_from, raw_from - 1)
  if result_json ~= '' then redis.call('HSET', task_key, 'result', result_json) end
end
redis.call('HSET', task_key, 'last_event_at', now)

local raw_id = ''
if raw_pairs > 0 then
  raw_id = redis.call('XADD', rawlog_key, 'MAXLEN', '~', rawlog_max, '*',
    'outcome', outcome, 'task_status', new_status, unpack(ARGV, raw_from, raw_from + 2 * raw_pairs - 1))
end

local entry = {stage = stage, source = source, outcome = outcome, at = now,
  from = status, to = new_status, code = tonumber(code), msg = msg}
if raw_id ~= '' then entry.raw_id = raw_id end
redis.call('RPUSH', history_key, cjson.encode(entry))
redis.call('LTRIM', history_key, -history_max, -1)

local reply = {outcome, status, new_status, created}
for _, name in ipairs(new_artifacts) do reply[#reply + 1] = name end
return reply
