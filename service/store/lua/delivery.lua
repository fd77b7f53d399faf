-- One queue of deliveries (a subscription's deliveries of one task), changed atomically.
--   record  the head's attempt: `attempt` (JSON) joins its attempts, `verdict` decides what next:
--           delivered | failed (given up): the next delivery of the task becomes the head;
--           retry: the head is due again at `next_at`; disable: the subscriber said 410 (the
--           head stays, pending, for when the subscription is enabled again); lost: the event
--           is no longer in the event log, so it is given up without counting against the
--           subscriber's health (nothing was sent).
--           A subscription failing for `disable_after_ms` is disabled; disabling tells the
--           event log (`subscription.disabled`).
--   idle    the queue is empty, or its subscription disabled or gone: off the due list.
--   retry   send `delivery_id` again now (settled: back to the head of its queue).
-- `delivery_id` must be the queue's head for `record`; otherwise (a late result of a delivery
-- another process took over) only the attempt is kept. Returns the delivery's state.

local now, sub, task = tonumber(A.now), A.subscription_id, A.task_id
local sub_key = key_webhook(prefix, sub)
local queue = key_delivery_queue(prefix, sub .. ':' .. task)

if A.mode == 'idle' then
  if redis.call('EXISTS', sub_key) == 0 then
    -- Deleted: its waiting deliveries of this task go with it (a queue at a time, as it is met).
    for _, gone in ipairs(redis.call('LRANGE', queue, 0, -1)) do
      redis.call('DEL', key_delivery(prefix, gone), key_delivery_attempts(prefix, gone))
      redis.call('ZREM', key_task_deliveries(prefix, task), gone)
    end
    redis.call('DEL', queue)
    due_remove(sub, task)
    return 'idle'
  end
  if redis.call('LLEN', queue) == 0 then
    due_remove(sub, task)
    redis.call('SREM', key_webhook_queues(prefix, sub), task)
  elseif redis.call('HGET', sub_key, 'enabled') ~= '1' then
    due_remove(sub, task)
  end
  return 'idle'
end

local id = A.delivery_id
local delivery_key = key_delivery(prefix, id)
if redis.call('EXISTS', delivery_key) == 0 then return 'missing' end
if A.mode == 'retry' then
  -- An operator's "send it again now": a settled delivery goes back to the head of its queue.
  local state = redis.call('HGET', delivery_key, 'state')
  if state == 'delivered' or state == 'failed' then
    redis.call('LPUSH', queue, id)
    redis.call('SADD', key_webhook_queues(prefix, sub), task)
    redis.call('HSET', delivery_key, 'state', 'pending', 'next_at', '')
  end
  redis.call('HSET', delivery_key, 'round_attempts', 0, 'resent', 1)
  if redis.call('HGET', sub_key, 'enabled') == '1' then due_set(sub, task, now) end
  return redis.call('HGET', delivery_key, 'state')
end
local attempts_key = key_delivery_attempts(prefix, id)
redis.call('RPUSH', attempts_key, A.attempt)
redis.call('LTRIM', attempts_key, -tonumber(A.attempts_kept), -1)
redis.call('HINCRBY', delivery_key, 'attempts', 1)
redis.call('HINCRBY', delivery_key, 'round_attempts', 1)
-- Counted by subscription, but a task's own endpoints together: one each would be unbounded.
local endpoint = redis.call('HGET', sub_key, 'kind') == 'task' and 'task_endpoint' or sub
metric_add('tapedeck_webhook_deliveries', {endpoint, A.status_class})
if A.verdict == 'delivered' and redis.call('HGET', delivery_key, 'resent') ~= '1' then
  -- From the event's creation (its id's time) to this 2xx; a replay or retry is not timed.
  local made = tonumber(string.match(redis.call('HGET', delivery_key, 'entry') or '', '^(%d+)-'))
  if made then metric_observe('tapedeck_event_to_delivered_seconds', {}, (now - made) / 1000) end
end
if redis.call('LINDEX', queue, 0) ~= id then return redis.call('HGET', delivery_key, 'state') end

local verdict = A.verdict
-- A 410 keeps the delivery at the head, pending: re-enabled, the subscription starts from it.
local STATES = {delivered = 'delivered', retry = 'retrying', failed = 'failed', disable = 'pending', lost = 'failed'}
local state = STATES[verdict] or 'failed'
redis.call('HSET', delivery_key, 'state', state, 'last_attempt_at', now, 'next_at', verdict == 'retry' and A.next_at or '')
if state == 'retrying' then
  due_set(sub, task, tonumber(A.next_at))
elseif state == 'pending' then
  due_remove(sub, task)
else
  redis.call('HSET', delivery_key, 'settled_at', now)
  redis.call('LPOP', queue)
  if redis.call('LLEN', queue) > 0 then
    due_set(sub, task, now)
  else
    due_remove(sub, task)
    redis.call('SREM', key_webhook_queues(prefix, sub), task)
  end
end

-- The subscription's health: failing since its first failure after a success. (A subscription
-- deleted while this attempt was in flight has none to keep; a lost event says nothing of it.)
local disable_reason = nil
if redis.call('EXISTS', sub_key) == 0 then
  return state
elseif verdict == 'delivered' then
  redis.call('HDEL', sub_key, 'failing_since')
  redis.call('HSET', sub_key, 'last_success_at', now)
elseif verdict ~= 'lost' then
  redis.call('HSETNX', sub_key, 'failing_since', now)
  redis.call('HSET', sub_key, 'last_failure_at', now)
  local since = tonumber(redis.call('HGET', sub_key, 'failing_since'))
  if verdict == 'disable' then
    disable_reason = 'the endpoint answered 410 Gone'
  elseif now - since >= tonumber(A.disable_after_ms) then
    disable_reason = 'every delivery failed for ' .. math.floor((now - since) / 1000) .. ' s'
  end
end
if disable_reason and redis.call('HGET', sub_key, 'enabled') == '1' then
  redis.call('HSET', sub_key, 'enabled', '0', 'disabled_at', now, 'disabled_reason', disable_reason)
  due_remove(sub, task)
  redis.call('XADD', key_events(prefix), 'MAXLEN', '~', tonumber(A.events_max), '*', 'type',
    'subscription.disabled', 'subscription_id', sub, 'at', now, 'reason', disable_reason, 'task_id', '')
  if redis.call('HGET', sub_key, 'kind') == 'task' then
    -- A task's own endpoint cannot be enabled again (it has no API of its own): what waits for
    -- it is given up now, rather than held pending for ever (fanout.lua makes no more).
    for _, waiting in ipairs(redis.call('LRANGE', queue, 0, -1)) do
      redis.call('HSET', key_delivery(prefix, waiting), 'state', 'failed', 'next_at', '', 'settled_at', now)
    end
    redis.call('DEL', queue)
    redis.call('SREM', key_webhook_queues(prefix, sub), task)
    state = 'failed'
  end
end

-- Settled deliveries beyond the newest `deliveries_kept` of the subscription are forgotten.
if state == 'delivered' or state == 'failed' then
  local listed = key_webhook_deliveries(prefix, sub)
  local over = redis.call('ZCARD', listed) - tonumber(A.deliveries_kept)
  if over > 0 then
    -- A few of the oldest at a time, skipping any still waiting, so the list shrinks back even
    -- past a long-disabled backlog.
    for _, oldest in ipairs(redis.call('ZRANGE', listed, 0, math.min(over, 10) + 9)) do
      local settled = redis.call('HMGET', key_delivery(prefix, oldest), 'state', 'task_id')
      if settled[1] == 'delivered' or settled[1] == 'failed' or not settled[1] then
        redis.call('ZREM', listed, oldest)
        redis.call('ZREM', key_task_deliveries(prefix, settled[2] or ''), oldest)
        redis.call('DEL', key_delivery(prefix, oldest), key_delivery_attempts(prefix, oldest))
        over = over - 1
        if over == 0 then break end
      end
    end
  end
end
return state
