-- Record one poll of a task: count it, schedule the next check, give up on it when it is time.
-- ARGV: prefix, history max, task_id, now_ms, news (1 if the poll moved the task), backoff min ms,
--       backoff max ms, give-up at ms, stop polling at ms, answer (a short JSON summary)
-- Returns {state, status}: state is ok | lost (given up now) | finished | stopped | missing.
local prefix, history_max = ARGV[1], tonumber(ARGV[2])
__COMMON__

local task_id, now, news = ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1'
local backoff_min, backoff_max = tonumber(ARGV[6]), tonumber(ARGV[7])
local give_up_at, stop_at, answer = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local task_key, due_key = key_task(prefix, task_id), key_polls_due(prefix)

local status = redis.call('HGET', task_key, 'status')
if not status then
  redis.call('ZREM', due_key, task_id)
  return {'missing', ''}
end
redis.call('HINCRBY', task_key, 'poll_count', 1)
redis.call('HSET', task_key, 'last_poll_at', now, 'last_poll_answer', answer)
if status == 'complete' or status == 'failed' then
  redis.call('ZREM', due_key, task_id)
  return {'finished', status}
end
if now >= stop_at then
  -- Past the files' retention nothing more can be saved: stop asking, for good.
  redis.call('ZREM', due_key, task_id)
  redis.call('HSET', task_key, 'polling_stopped', now)
  return {'stopped', status}
end
if not news then
  local streak = redis.call('HINCRBY', task_key, 'poll_streak', 1)
  local delay = math.min(backoff_min * 2 ^ (streak - 1), backoff_max)
  redis.call('ZADD', due_key, now + delay, task_id)
end
local state = 'ok'
if now >= give_up_at and status ~= 'lost' and not news then
  local member = redis.call('HGET', task_key, 'index_member')
  redis.call('ZREM', key_index_status(prefix, status), member)
  redis.call('ZADD', key_index_status(prefix, 'lost'), 0, member)
  local reason = 'not finished ' .. math.floor((now - give_up_at) / 1000 + 0.5) .. 's past the give-up time'
  redis.call('HSET', task_key, 'status', 'lost', 'lost_at', now, 'lost_reason', 'no final answer in time',
    'updated_at', now)
  local history_key = key_history(prefix, task_id)
  redis.call('RPUSH', history_key, cjson.encode({stage = 'lost', source = 'poll', outcome = 'applied',
    at = now, from = status, to = 'lost', msg = reason, answer = answer}))
  redis.call('LTRIM', history_key, -history_max, -1)
  -- A lost task is still asked now and then: a late answer can still complete it.
  redis.call('ZADD', due_key, now + backoff_max, task_id)
  state, status = 'lost', 'lost'
end
return {state, status}
