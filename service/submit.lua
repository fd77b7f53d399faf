-- Attach a submission to the upstream task it created: create the task if no callback did
-- yet, link both ways, mark the submission submitted and append the `submit` history entry.
-- ARGV: prefix, history max, task_id, submission_id, family, now_ms, first poll due (ms)
-- Returns {status, created (0|1)}.
local prefix, history_max = ARGV[1], tonumber(ARGV[2])
__COMMON__

local task_id, submission_id, family, now = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local task_key = key_task(prefix, task_id)
local status, _, created = ensure_task(task_key, task_id, now, family)
link_submission(task_key, task_id, submission_id, true)
redis.call('HSET', key_submission(prefix, submission_id), 'state', 'submitted', 'submitted_at', now)
redis.call('HSET', task_key, 'submitted_at', now, 'last_event_at', now)
local history_key = key_history(prefix, task_id)
redis.call('RPUSH', history_key, cjson.encode({stage = 'submit', source = 'submit', outcome = 'applied',
  at = now, from = status, to = status, submission_id = submission_id}))
redis.call('LTRIM', history_key, -history_max, -1)
-- Unless a callback already finished the task or set its next check, the first poll is due.
if status ~= 'complete' and status ~= 'failed' then
  redis.call('ZADD', key_polls_due(prefix), 'NX', tonumber(ARGV[7]), task_id)
end
return {status, created}
