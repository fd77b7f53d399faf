-- Apply a batch of stage events atomically, in one round trip: for each event, create the task
-- if unknown, decide the outcome from the lifecycle table (rendered from core/lifecycle.py),
-- move status and indexes, record stage times (and skipped stages), merge tracks and
-- artifacts, append the history entry and the raw-log entry.
--
-- Keys are built here from the templates of store/keys.py rather than passed in KEYS, because
-- one call serves events of many tasks; Tapedeck runs on standalone or Sentinel-managed Redis,
-- not Redis Cluster, where that would cross slots.
--
-- ARGV: the head named in scripts.TRANSITION, then per event the fields of scripts.EVENT_FIELDS
-- followed by its track, artifact and raw-log name/value pairs.
-- Returns, per event: {outcome, status_before, status_after, created (0|1), new artifact names...}.

local history_max, rawlog_max = tonumber(A.history_max), tonumber(A.raw_log_max)
local POLL_AFTER = {pending = tonumber(A.poll_after_pending), text = tonumber(A.poll_after_text),
  first = tonumber(A.poll_after_first)}

-- Tracks and artifacts arrive as name/JSON pairs already encoded by Python, so the common case
-- (first sight) costs one HSETNX and no JSON work here. The texts the tracks refer to
-- (scripts.store_tracks) come as JSON strings: a text is named by its hash, so it is never merged.
local function merge_tracks(tracks_key, from, to, overwrite)
  for i = from, to, 2 do
    local id, encoded = ARGV[i], ARGV[i + 1]
    local is_text = string.byte(encoded, 1) == 34  -- '"'
    if redis.call('HSETNX', tracks_key, id, encoded) == 0 and overwrite and not is_text then
      -- A stored record that cannot be read (a bug, a hand edit) is replaced, never an error
      -- half-way through the event.
      local read, merged = pcall(cjson.decode, redis.call('HGET', tracks_key, id))
      if not read or type(merged) ~= 'table' then merged = {} end
      for k, v in pairs(cjson.decode(encoded)) do
        if v ~= cjson.null and v ~= '' then merged[k] = v end
      end
      -- A record written before texts were shared keeps its own prompt until a new one names one.
      if merged.prompt_ref then merged.prompt = nil end
      -- cjson writes '/' as '\/' (and always so): the plain form is the same JSON, shorter.
      redis.call('HSET', tracks_key, id, (string.gsub(cjson.encode(merged), '\\/', '/')))
    end
  end
end

-- A new artifact also goes to the downloads outbox, in this same atomic step, so the callback
-- ack never waits on a job queue and no artifact is ever queued twice.
local function add_artifacts(task_id, artifacts_key, from, to, reply, now)
  local outbox, due, added = {}, {}, {}
  for i = from, to, 2 do
    if redis.call('HSETNX', artifacts_key, ARGV[i], ARGV[i + 1]) == 1 then
      reply[#reply + 1] = ARGV[i]
      added[#added + 1] = ARGV[i + 1]
      local member = task_id .. ' ' .. ARGV[i]
      outbox[#outbox + 1] = member
      due[#due + 1] = now + DOWNLOAD_GRACE_MS
      due[#due + 1] = member
    end
  end
  call_chunked('RPUSH', key_downloads_new(prefix), outbox)
  call_chunked('ZADD', key_downloads_due(prefix), due)
  return added
end

-- The event starting at ARGV[at], by name, and where its pairs and the next event start.
local function read_event(at)
  local e = {}
  for name, offset in pairs(EVENT) do e[name] = ARGV[at + offset] end
  e.now = tonumber(e.now)
  e.tracks_from = at + EVENT_FIELDS
  e.artifacts_from = e.tracks_from + 2 * tonumber(e.track_pairs)
  e.raw_from = e.artifacts_from + 2 * tonumber(e.artifact_pairs)
  e.next_at = e.raw_from + 2 * tonumber(e.raw_pairs)
  return e
end

-- A lost task is judged from the stage it had reached (lifecycle.decide); only progress revives it.
local function judged_status(task_key, status)
  if status ~= 'lost' then return status end
  local judged = 'pending'
  for _, reached in ipairs({'text', 'first'}) do
    local record = redis.call('HGET', task_key, 'stage:' .. reached)
    if record and not string.find(record, 'skipped', 1, true) then judged = reached end
  end
  return judged
end

-- A reply as kept on the task: its outcome and statuses, short enough that the task hash keeps
-- Redis's compact encoding (a re-send is answered without the names of the files it revealed).
local function short_reply(reply)
  return reply[1] .. ' ' .. reply[2] .. ' ' .. reply[3] .. ' ' .. reply[4]
end

local function split_reply(kept)
  local reply = {}
  for part in string.gmatch(kept, '%S+') do reply[#reply + 1] = part end
  return reply
end

local function apply(e)
  local task_id, stage, now = e.task_id, e.stage, e.now
  if e.signature ~= '' then
    -- Kie signs the task id and timestamp, not the body: a pair seen with one body is refused
    -- with any other (someone replaying a captured signature), before this event writes
    -- anything; the same body again is an ordinary duplicate.
    local signature_key = key_signature(prefix, e.signature)
    local seen = redis.call('GET', signature_key)
    if seen and seen ~= e.body_sha256 then
      -- Nothing from this body is written. But Kie may send two stages of a task within one
      -- second (one timestamp): so that a genuine one is not lost, the task is asked about now.
      local current = redis.call('HGET', key_task(prefix, task_id), 'status')
      if current and not TERMINAL[current] then redis.call('ZADD', key_polls_due(prefix), now, task_id) end
      return {'signature_reused', '', '', 0}, e.next_at
    end
    if not seen then redis.call('SET', signature_key, e.body_sha256, 'EX', tonumber(e.signature_ttl_s)) end
  end
  local task_key = key_task(prefix, task_id)
  local status, member, created, last_id, last_reply = ensure_task(task_key, task_id, now, e.family)
  if e.event_id ~= '' and last_id == e.event_id and last_reply then
    -- The same delivery again: the client re-sent a call whose reply it lost. The task keeps
    -- its last delivery's id and reply, so it answers again and writes nothing twice.
    -- It still writes one unchanging field: the call may come on a new connection, and WAIT
    -- (REDIS_ACK_REPLICAS) waits only for its own connection's writes, which now reach past the
    -- first call's.
    redis.call('HSET', task_key, 'last_event_id', e.event_id)
    return split_reply(last_reply), e.next_at
  end
  local judged = judged_status(task_key, status)
  -- A status the lifecycle does not know (only a bug or a hand edit makes one) moves nowhere:
  -- the event is recorded as a conflict, never an error half-way through a batch.
  local decision = TRANSITIONS[judged .. '|' .. stage] or {'conflict', status}
  if e.submission_id ~= '' then
    link_submission(task_key, task_id, e.submission_id, false)
  end
  local outcome, new_status = decision[1], decision[2]
  if status == 'lost' and outcome ~= 'applied' then new_status = 'lost' end
  local reply = {outcome, status, new_status, created}
  if e.source == 'callback' then metric_add('tapedeck_callbacks', {e.family, stage, outcome}) end
  if outcome == 'applied' then count_transition(e.source, stage, now) end

  if outcome == 'applied' then
    move_index(member, status, new_status)
    redis.call('HSETNX', task_key, 'stage:' .. stage, cjson.encode({at = now, source = e.source}))
    if stage == 'error' then
      local message = e.error ~= '' and e.error or e.msg
      redis.call('HSET', task_key, 'error_code', e.code, 'error_message', utf8_head(message, ERROR_MESSAGE_BYTES))
      if #message > ERROR_MESSAGE_BYTES then
        redis.call('HSET', task_key, 'error_message_bytes', #message)
      else
        redis.call('HDEL', task_key, 'error_message_bytes')
      end
    else
      for _, earlier in ipairs(SUCCESS_STAGES) do
        if earlier == stage then break end
        redis.call('HSETNX', task_key, 'stage:' .. earlier, '{"skipped":true}')
      end
    end
    merge_tracks(key_tracks(prefix, task_id), e.tracks_from, e.artifacts_from - 1, true)
    local added = add_artifacts(task_id, key_artifacts(prefix, task_id), e.artifacts_from, e.raw_from - 1,
      reply, now)
    if #added > 0 then reindex_archive(task_id) end  -- files already known keep their states
    if e.result ~= '' then redis.call('HSET', task_key, 'result', e.result) end
    if status == 'lost' then
      -- Revived, and the stage it reached told as itself too: a subscriber of task.completed alone
      -- must hear of a task that completed after it was given up.
      append_event(task_key, task_id, {'type', 'task.revived', 'at', now, 'source', e.source,
        'status', new_status}, A.events_max)
    end
    local told = {'type', STAGE_TYPES[stage], 'at', now,
      'source', e.source, 'status', new_status, 'tracks', e.told_tracks, 'files', json_array(added)}
    if stage == 'error' then
      told[#told + 1] = 'error_code'
      told[#told + 1] = e.code
      told[#told + 1] = 'error_message'
      told[#told + 1] = utf8_head(e.error ~= '' and e.error or e.msg, HISTORY_MSG_BYTES)
    end
    append_event(task_key, task_id, told, A.events_max)
    redis.call('HSET', task_key, 'status', new_status, 'updated_at', now, 'last_event_at', now, 'poll_streak', 0,
      'last_event_id', e.event_id, 'last_reply', short_reply(reply))
    -- A final stage that brings no new file may find the task's files already settled (read
    -- after the status is written: the archive is told only of a final task).
    if TERMINAL[new_status] and #added == 0 then tell_archive(task_id, now, A.events_max) end
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
      merge_tracks(key_tracks(prefix, task_id), e.tracks_from, e.artifacts_from - 1, false)
      local also = add_artifacts(task_id, key_artifacts(prefix, task_id), e.artifacts_from, e.raw_from - 1, reply, now)
      if #also > 0 then reindex_archive(task_id) end
    end
    redis.call('HSET', task_key, 'last_event_at', now, 'last_event_id', e.event_id,
      'last_reply', short_reply(reply))
  end

  -- History is kept per event, duplicates too: its copy of the message is short.
  local entry = {stage = stage, source = e.source, outcome = outcome, at = now,
    from = status, to = new_status, code = tonumber(e.code), msg = utf8_head(e.msg, HISTORY_MSG_BYTES)}
  if #e.msg > HISTORY_MSG_BYTES then entry.msg_bytes = #e.msg end
  if e.next_at > e.raw_from then
    entry.raw_id = redis.call('XADD', key_raw_log(prefix), 'MAXLEN', '~', rawlog_max, '*',
      'outcome', outcome, 'task_status', new_status, unpack(ARGV, e.raw_from, e.next_at - 1))
  end
  append_history(task_id, entry, history_max)
  return reply, e.next_at
end

-- Every event is checked before anything is written: Redis keeps the writes of a script that
-- fails, so a refusal must come first. A refused batch wrote nothing; the caller then applies
-- its events one by one, and only the bad one is refused.
local function problem(at)
  -- Only what the checks need, read by name from ARGV: the whole event is read once, to apply it.
  if at + EVENT_FIELDS - 1 > #ARGV then return 'the batch ends inside an event' end
  if not STAGES[ARGV[at + EVENT.stage]] then return 'unknown stage ' .. tostring(ARGV[at + EVENT.stage]) end
  if ARGV[at + EVENT.task_id] == '' or not tonumber(ARGV[at + EVENT.now]) then return 'no task id or time' end
  local tracks = tonumber(ARGV[at + EVENT.track_pairs])
  local artifacts = tonumber(ARGV[at + EVENT.artifact_pairs])
  local raw = tonumber(ARGV[at + EVENT.raw_pairs])
  if not (tracks and artifacts and raw) or tracks < 0 or artifacts < 0 or raw < 0 then
    return 'pair counts must be whole numbers'
  end
  -- Each track may bring the text it refers to (scripts.store_tracks): twice as many pairs.
  if tracks > 2 * MAX_TRACKS or artifacts > MAX_ARTIFACTS or raw > MAX_RAW_PAIRS then
    return 'more tracks, files or raw-log fields than an event may carry'
  end
  local next_at = at + EVENT_FIELDS + 2 * (tracks + artifacts + raw)
  if next_at - 1 > #ARGV then return 'the batch ends inside an event\'s pairs' end
  local ttl = tonumber(ARGV[at + EVENT.signature_ttl_s])
  if ARGV[at + EVENT.signature] ~= '' and (not ttl or ttl < 1) then
    return 'a signature needs a time to be remembered'
  end
  return nil, next_at
end

local at, index = ARG_COUNT + 1, 1
while at <= #ARGV do
  local refused, next_at = problem(at)
  if refused then return redis.error_reply('EVENT ' .. index .. ': ' .. refused) end
  at, index = next_at, index + 1
end

local replies = {}
at = ARG_COUNT + 1
defer_metrics()  -- the batch's counts, each series written once after its last event
while at <= #ARGV do
  local reply
  reply, at = apply(read_event(at))
  replies[#replies + 1] = reply
end
flush_metrics()
return replies
