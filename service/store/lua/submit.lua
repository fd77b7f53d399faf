-- Attach a submission to the upstream task it created: create the task if no callback did
-- yet, link both ways, mark the submission submitted and append the `submit` history entry.
-- Returns {status, created (0|1)}.

local task_id, submission_id, now = A.task_id, A.submission_id, tonumber(A.now)
local task_key = key_task(prefix, task_id)
-- A re-send after a lost reply finds the link made: it answers again and appends nothing.
local linked = redis.call('HMGET', key_submission(prefix, submission_id), 'state', 'task_id')
if linked[1] == 'submitted' and linked[2] == task_id then
  return {redis.call('HGET', task_key, 'status') or 'pending', 0}
end
local status, _, created = ensure_task(task_key, task_id, now, A.family)
link_submission(task_key, task_id, submission_id, true)
-- A submission that is gone (it expired) is not made again as a partial hash: the task stands alone.
if redis.call('EXISTS', key_submission(prefix, submission_id)) == 1 then
  redis.call('HSET', key_submission(prefix, submission_id), 'state', 'submitted', 'submitted_at', now)
end
redis.call('HSET', task_key, 'submitted_at', now, 'last_event_at', now)
append_history(task_id, {stage = 'submit', source = 'submit', outcome = 'applied', at = now, from = status,
  to = status, submission_id = submission_id}, tonumber(A.history_max))
append_event(task_key, task_id, {'type', 'task.submitted', 'at', now, 'source', 'submit', 'status', status}, A.events_max)
count_transition('submit', 'submit', now)
-- Unless a callback already finished the task or set its next check, the first poll is due.
if not TERMINAL[status] then
  redis.call('ZADD', key_polls_due(prefix), 'NX', tonumber(A.first_poll_at), task_id)
end
return {status, created}
