-- Metrics (core/metrics.py names them; the `{p}:metrics` hash keeps them). A label value from
-- outside that is empty, long or odd is `other`, as in Python: the series stay bounded.
local function metric_label(value)
  local text = tostring(value or '')
  if #text == 0 or #text > 64 or string.find(text, '[^%w_.:/%-]') then return 'other' end
  return text
end

local function metric_field(name, values)
  local parts = {name}
  for i = 1, #values do parts[i + 1] = metric_label(values[i]) end
  return table.concat(parts, '|')
end

-- Between defer_metrics() and flush_metrics(), counts are gathered here and each series is
-- written once at the end: a call of many events (transition.lua) then costs a few HINCRBYs,
-- not five per event. Only a script that fails half-way (a bug: every input is checked before
-- the first write) would lose what it had gathered.
local deferred, deferred_minutes = nil, nil  -- field -> n; minute key -> {label -> n}

local function defer_metrics()
  deferred, deferred_minutes = {}, {}
end

local function metric_add(name, values, n)
  local field = metric_field(name, values)
  if deferred then
    deferred[field] = (deferred[field] or 0) + (n or 1)
  else
    redis.call('HINCRBY', key_metrics(prefix), field, n or 1)
  end
end

local function add_to_minute(minute, label, n)
  redis.call('HINCRBY', minute, label, n)
  redis.call('EXPIRE', minute, MINUTE_KEEP_S)
end

-- A status change, counted by source (and stage), in total and in its minute: the dashboard
-- draws the last hour from the minutes, each kept two hours.
local function count_transition(source, stage, now)
  metric_add('tapedeck_transitions', {source})
  metric_add('tapedeck_stages_reached', {stage, source})
  local minute = key_transitions_minute(prefix, tostring(math.floor(now / 60000)))
  local label = metric_label(source)
  if deferred_minutes then
    local counts = deferred_minutes[minute] or {}
    deferred_minutes[minute] = counts
    counts[label] = (counts[label] or 0) + 1
  else
    add_to_minute(minute, label, 1)
  end
end

local function flush_metrics()
  if not deferred then return end
  for field, n in pairs(deferred) do redis.call('HINCRBY', key_metrics(prefix), field, n) end
  for minute, counts in pairs(deferred_minutes) do
    for label, n in pairs(counts) do add_to_minute(minute, label, n) end
  end
  deferred, deferred_minutes = nil, nil
end

-- One observation of a histogram, in seconds; anything that is not a number is not observed.
local function metric_observe(name, values, seconds)
  seconds = tonumber(seconds)
  local bounds = METRIC_BUCKETS[name]
  if not seconds or not bounds then return end
  local bucket = #bounds + 1
  for i, bound in ipairs(bounds) do
    if seconds <= bound then bucket = i break end
  end
  local base = metric_field(name, values)
  redis.call('HINCRBY', key_metrics(prefix), base .. '|' .. bucket, 1)
  redis.call('HINCRBYFLOAT', key_metrics(prefix), base .. '|sum', string.format('%.6f', seconds))
end

-- Helpers every script shares, so each rule of the data model is written once.

-- Redis's own clock in ms: every process and machine then counts the same time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Calls a variadic command (RPUSH, ZADD...) on `key` with `items`, in chunks: Lua's unpack
-- fails past a few thousand values, and a script that fails half-way keeps what it wrote.
local CHUNK = 1000
local function call_chunked(command, key, items)
  for from = 1, #items, CHUNK do
    redis.call(command, key, unpack(items, from, math.min(from + CHUNK - 1, #items)))
  end
end

-- At most `limit` bytes of `text`, cut before a UTF-8 sequence rather than inside one: a cut
-- mid-character would store bytes no reader can decode.
local function utf8_head(text, limit)
  if #text <= limit then return text end
  local cut = limit
  while cut > 0 do
    local next_byte = string.byte(text, cut + 1)
    if next_byte < 0x80 or next_byte >= 0xC0 then break end
    cut = cut - 1
  end
  return string.sub(text, 1, cut)
end

-- Appends one entry to a task's history and keeps the newest `history_max`.
local function append_history(task_id, entry, history_max)
  local history_key = key_history(prefix, task_id)
  -- Trimmed only once past its cap: most tasks never reach it, and LTRIM is a call all the same.
  if redis.call('RPUSH', history_key, cjson.encode(entry)) > history_max then
    redis.call('LTRIM', history_key, -history_max, -1)
  end
end

-- Appends one entry to the event log downstream applications read (core/task_events.py), in
-- the same script call as the change it tells of: no change without its event. `fields` are
-- name/value pairs; the task's own sequence number, family and submission are added here.
-- Returns the entry's stream id.
local function append_event(task_key, task_id, fields, events_max)
  local seq = redis.call('HINCRBY', task_key, 'event_seq', 1)
  local known = redis.call('HMGET', task_key, 'family', 'submission_id')
  return redis.call('XADD', key_events(prefix), 'MAXLEN', '~', tonumber(events_max), '*',
    'task_id', task_id, 'seq', seq, 'family', known[1] or '', 'submission_id', known[2] or '', unpack(fields))
end

-- Whether stream id `a` ("ms-seq") comes after `b`.
local function stream_id_after(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not a_ms then return false end
  if not b_ms then return true end
  a_ms, a_seq, b_ms, b_seq = tonumber(a_ms), tonumber(a_seq), tonumber(b_ms), tonumber(b_seq)
  return a_ms > b_ms or (a_ms == b_ms and a_seq > b_seq)
end

-- A JSON array of already-encoded JSON values, without decoding them.
local function json_array(encoded)
  return '[' .. table.concat(encoded, ',') .. ']'
end

-- Tells downstream once a final (or lost) task's files have all settled: `task.files_stored`
-- when every one is stored, `task.files_failed` when any failed or expired. Told again only if
-- what it would say changes (a late stage, or a lost task revived, added files). Called after
-- the change that may settle them. Its source is `download`: the archive, not the upstream.
local ARCHIVE_FIELDS = {'name', 'kind', 'track_id', 'state', 'sha256', 'bytes', 'content_type', 'last_error'}
local function tell_archive(task_id, now, events_max)
  local task_key = key_task(prefix, task_id)
  local status = redis.call('HGET', task_key, 'status')
  if not status or not (TERMINAL[status] or status == 'lost') then return end
  local files, all_stored = {}, true
  for _, raw in ipairs(redis.call('HVALS', key_artifacts(prefix, task_id))) do
    local read, artifact = pcall(cjson.decode, raw)
    if not read or type(artifact) ~= 'table' then artifact = {state = 'failed'} end
    if not SETTLED[artifact.state] then return end
    all_stored = all_stored and artifact.state == 'stored'
    local shown = {}
    for _, field in ipairs(ARCHIVE_FIELDS) do shown[field] = artifact[field] end
    files[#files + 1] = shown
  end
  if #files == 0 then return end
  local told = (all_stored and 'task.files_stored' or 'task.files_failed') .. ' ' .. #files
  if redis.call('HGET', task_key, 'archive_told') == told then return end
  redis.call('HSET', task_key, 'archive_told', told)
  append_event(task_key, task_id, {'type', all_stored and 'task.files_stored' or 'task.files_failed',
    'at', now, 'source', 'download', 'status', status, 'files', cjson.encode(files)}, events_max)
  if all_stored then
    local read, final = pcall(cjson.decode, redis.call('HGET', task_key, 'stage:complete') or '')
    if read and type(final) == 'table' and tonumber(final.at) then
      metric_observe('tapedeck_complete_to_stored_seconds', {}, (now - tonumber(final.at)) / 1000)
    end
  end
end

-- Moves a task's index member from one status index to another.
local function move_index(member, from, to)
  if from == to then return end
  redis.call('ZREM', key_index_status(prefix, from), member)
  redis.call('ZADD', key_index_status(prefix, to), 0, member)
end

-- Creates the task if unknown, the same way whether a callback or a submission reaches Redis
-- first. Returns status, index member, 1 if the task was created now (else 0), and the id and
-- reply of the last event delivered to it (read here, in the same command, for re-sends).
local function ensure_task(task_key, task_id, now, family)
  local current = redis.call('HMGET', task_key, 'status', 'index_member', 'family', 'last_event_id', 'last_reply')
  local status, member, created = current[1], current[2], 0
  if not status then
    created = 1
    status = 'pending'
    member = string.format('%013d', now) .. ':' .. task_id
    redis.call('HSET', task_key, 'task_id', task_id, 'status', status, 'created_at', now,
      'updated_at', now, 'index_member', member)
    redis.call('ZADD', key_index_all(prefix), 0, member)
    redis.call('ZADD', key_index_status(prefix, status), 0, member)
  end
  if family ~= '' and not current[3] then
    redis.call('HSET', task_key, 'family', family)
  end
  return status, member, created, current[4], current[5]
end

-- The subscription that stands for a submission's own `webhook_url` (core/webhooks.py
-- task_endpoint_id).
local function task_endpoint(submission_id)
  return 'ept_' .. string.sub(submission_id, 5)
end

-- The task and its submission name each other, whichever of callback and create response
-- arrives first; a submission whose create response was lost still finds its task. The create
-- response is authoritative: it names the submission's task even if a callback guessed first.
-- A submission (and its own endpoint) expires with its Idempotency-Key until a task is linked
-- (begin_submission.lua); linked, it lives as long as the task, whose retention removes it.
local function link_submission(task_key, task_id, submission_id, authoritative)
  local sub_key = key_submission(prefix, submission_id)
  if redis.call('EXISTS', sub_key) == 0 then return end
  redis.call('HSETNX', task_key, 'submission_id', submission_id)
  local linked = authoritative
  if authoritative then
    redis.call('HSET', sub_key, 'task_id', task_id)
  else
    linked = redis.call('HSETNX', sub_key, 'task_id', task_id) == 1
  end
  if linked then
    redis.call('PERSIST', sub_key)
    redis.call('PERSIST', key_webhook(prefix, task_endpoint(submission_id)))
  end
end

-- The deliveries due list has two levels: each subscription's queues (its task ids) by due time,
-- and the subscriptions by their earliest, so a take steps past a busy subscription in one
-- move, however long its backlog. These helpers are the only writers, and keep the two agreeing.
local function due_refresh(sub)
  local first = redis.call('ZRANGE', key_subscription_due(prefix, sub), 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', key_deliveries_due(prefix), sub)
  else
    redis.call('ZADD', key_deliveries_due(prefix), first[2], sub)
  end
end

-- Sets a queue's due time (`flag`: nil, 'NX' to keep one already set, 'XX' to only move one).
local function due_set(sub, task, at, flag)
  local key = key_subscription_due(prefix, sub)
  local changed
  if flag then
    changed = redis.call('ZADD', key, flag, 'CH', at, task)
  else
    changed = redis.call('ZADD', key, 'CH', at, task)
  end
  if changed > 0 then due_refresh(sub) end
  return changed
end

local function due_remove(sub, task)
  if redis.call('ZREM', key_subscription_due(prefix, sub), task) > 0 then due_refresh(sub) end
end

local function due_at(sub, task)
  return tonumber(redis.call('ZSCORE', key_subscription_due(prefix, sub), task))
end


-- A task's files in one word (core/lifecycle.py archive_summary, the same rule: a test compares
-- the two for every mix of states); nil for a task with no files.
local function archive_summary(task_id)
  local found, any = {}, false
  for _, raw in ipairs(redis.call('HVALS', key_artifacts(prefix, task_id))) do
    local read, artifact = pcall(cjson.decode, raw)
    local state = 'failed'  -- unreadable, as Python reads it (store/tasks.py _state_of)
    if read and type(artifact) == 'table' then
      state = type(artifact.state) == 'string' and artifact.state or 'waiting'
    end
    found[state], any = true, true
  end
  if not any then return nil end
  local only_stored = true
  for state in pairs(found) do if state ~= 'stored' then only_stored = false end end
  if only_stored then return 'stored' end
  if found.waiting or found.downloading then return found.stored and 'partial' or 'waiting' end
  if found.stored then return 'partial' end
  return found.failed and 'failed' or 'expired'
end

-- Keeps the count of tasks by archive word (the overview's) after a change to a task's files.
-- A task indexed by none yet (files from before this count) is counted from its first change.
local function reindex_archive(task_id)
  local task_key = key_task(prefix, task_id)
  if redis.call('EXISTS', task_key) == 0 then return end  -- files of no task: no record is made
  local before = redis.call('HGET', task_key, 'archive')
  local after = archive_summary(task_id)
  if before == (after or false) then return end
  if before then redis.call('HINCRBY', key_archives(prefix), before, -1) end
  if after then
    redis.call('HINCRBY', key_archives(prefix), after, 1)
    redis.call('HSET', task_key, 'archive', after)
  else
    redis.call('HDEL', task_key, 'archive')
  end
end
