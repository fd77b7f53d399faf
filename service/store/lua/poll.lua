-- Record one poll of a task: count it, schedule the next check, give up on it when it is time.
-- The backoff delay comes from Python (core/retry.Backoff, with jitter); giving up is the
-- lifecycle's `give_up` move (core/lifecycle.py), like any other status change.
-- Returns {state, status}: state is ok | lost (given up now) | finished | stopped | missing.

local history_max, task_id, now = tonumber(A.history_max), A.task_id, tonumber(A.now)
-- Every poll recorded is counted by its result (a re-send of one is not a second poll).
local function recorded(state, status)
  metric_add('tapedeck_polls', {state})
  return {state, status}
end
local news = A.news == '1'
local task_key, due_key = key_task(prefix, task_id), key_polls_due(prefix)

local status = redis.call('HGET', task_key, 'status')
if not status then
  redis.call('ZREM', due_key, task_id)
  return recorded('missing', '')
end
-- A re-send after a lost reply (the client retries on a dropped connection) counts nothing twice.
local last = redis.call('HMGET', task_key, 'last_poll_id', 'last_poll_reply')
if last[1] == A.poll_id then return {last[2] or 'ok', status} end
redis.call('HINCRBY', task_key, 'poll_count', 1)
redis.call('HSET', task_key, 'last_poll_at', now, 'last_poll_answer', A.answer, 'last_poll_id', A.poll_id,
  'last_poll_reply', 'ok')
if TERMINAL[status] then
  redis.call('ZREM', due_key, task_id)
  redis.call('HSET', task_key, 'last_poll_reply', 'finished')
  return recorded('finished', status)
end
if now >= tonumber(A.stop_at) then
  -- Past the files' retention nothing more can be saved: stop asking, for good.
  redis.call('ZREM', due_key, task_id)
  redis.call('HSET', task_key, 'polling_stopped', now, 'last_poll_reply', 'stopped')
  return recorded('stopped', status)
end
if not news then
  redis.call('HINCRBY', task_key, 'poll_streak', 1)
  redis.call('ZADD', due_key, now + tonumber(A.delay_ms), task_id)
end
local give_up_at = tonumber(A.give_up_at)
if news or now < give_up_at or status == 'lost' then return recorded('ok', status) end

-- A status the lifecycle does not know (only a bug or a hand edit) has no move: nothing to do.
local decision = TRANSITIONS[status .. '|give_up']
if not decision or decision[1] ~= 'applied' then return recorded('ok', status) end
local lost = decision[2]
move_index(redis.call('HGET', task_key, 'index_member'), status, lost)
local reason = 'not finished ' .. math.floor((now - give_up_at) / 1000 + 0.5) .. 's past the give-up time'
redis.call('HSET', task_key, 'status', lost, 'lost_at', now, 'lost_reason', 'no final answer in time',
  'updated_at', now)
append_history(task_id, {stage = 'lost', source = 'poll', outcome = 'applied', at = now, from = status,
  to = lost, msg = reason, answer = A.answer}, history_max)
append_event(task_key, task_id, {'type', 'task.lost', 'at', now, 'source', 'poll', 'status', lost,
  'reason', reason}, A.events_max)
redis.call('HSET', task_key, 'last_poll_reply', 'lost')
-- A lost task is still asked now and then: a late answer can still complete it.
redis.call('ZADD', due_key, now + tonumber(A.lost_recheck_ms), task_id)
-- What it had already stored (an early stage's files) is told now, as for a final task.
tell_archive(task_id, now, A.events_max)
count_transition('give_up', 'lost', now)  -- not a stage a poll found: not callback loss
return recorded('lost', lost)
