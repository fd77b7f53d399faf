-- Fans event-log entries out to the subscriptions that want them (Python chose which): each
-- (subscription, task, entry) triple after the named arguments becomes one delivery, queued
-- behind that subscription's earlier deliveries of the same task. A delivery's id is made of
-- its subscription and entry, so fanning the same entries out again (a process died before
-- the cursor moved) makes nothing twice; with `requeue` (a replay) a settled delivery is queued
-- again. Moves the cursor to `cursor` (the last entry fanned out; '' leaves it) if that is later,
-- with `passed`, how many entries the log has ever held up to it (-1: not known). `lost` entries after
-- `read_from` (the cursor this batch was read after) were trimmed before they could be read:
-- counted once, by the call that moves the cursor from `read_from`.
-- With `replay_of` (a subscription id) the batch is a step of that subscription's replay
-- instead: made only if the replay `replay_id` is still at `read_from` (two processes never make
-- one step twice, nor a step of a replay since asked again), it moves the replay to `cursor`,
-- and `replay_done` ends it.
-- Returns the number of deliveries made (-1: a replay step already made, or no longer wanted).

local now, made, requeue = tonumber(A.now), 0, A.requeue == '1'
local replay_key = A.replay_of ~= '' and key_webhook(prefix, A.replay_of) or nil
if replay_key then
  -- The replay's id too: a replay asked again meanwhile may start from the same place.
  local at = redis.call('HMGET', replay_key, 'replay_after', 'replay_done_at', 'replay_id')
  if at[1] ~= A.read_from or (at[2] and at[2] ~= '') or at[3] ~= A.replay_id then return -1 end
end
local SETTLED_DELIVERY = {delivered = true, failed = true}
for i = ARG_COUNT + 1, #ARGV - 2, 3 do
  local sub, task, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = 'dlv_' .. sub .. '_' .. entry
  local delivery_key = key_delivery(prefix, id)
  local subscription = redis.call('HMGET', key_webhook(prefix, sub), 'id', 'enabled', 'kind')
  local state = redis.call('HGET', delivery_key, 'state')
  -- A replay sends a settled delivery again, under its own id; one still queued is left be.
  -- A task's own endpoint, once disabled, is finished (delivery.lua): nothing more is made for it.
  local finished = subscription[3] == 'task' and subscription[2] ~= '1'
  local send = subscription[1] and not finished and (not state or (requeue and SETTLED_DELIVERY[state]))
  if send then
    if not state then
      redis.call('HSET', delivery_key, 'id', id, 'subscription_id', sub, 'task_id', task, 'entry', entry,
        'attempts', 0, 'created_at', now)
    end
    redis.call('HSET', delivery_key, 'state', 'pending', 'next_at', '', 'round_attempts', 0)
    if state then redis.call('HSET', delivery_key, 'resent', 1) end  -- a replay: not timed
    redis.call('RPUSH', key_delivery_queue(prefix, sub .. ':' .. task), id)
    redis.call('SADD', key_webhook_queues(prefix, sub), task)
    redis.call('ZADD', key_webhook_deliveries(prefix, sub), now, id)
    redis.call('ZADD', key_task_deliveries(prefix, task), now, id)
    -- NX: a queue whose head is waiting for its retry keeps that time.
    if subscription[2] == '1' then due_set(sub, task, now, 'NX') end
    made = made + 1
  end
end
if replay_key then
  redis.call('HSET', replay_key, 'replay_after', A.cursor)
  redis.call('HINCRBY', replay_key, 'replay_queued', made)
  if A.replay_done == '1' then
    redis.call('HSET', replay_key, 'replay_done_at', now)
    redis.call('SREM', key_webhook_replays(prefix), A.replay_of)
  end
elseif A.cursor ~= '' then
  local cursor_key, gaps = key_webhook_cursor(prefix), key_webhook_gaps(prefix)
  local stored = redis.call('GET', cursor_key) or ''
  if stored == A.read_from or stream_id_after(A.cursor, stored == '' and '0-0' or stored) then
    redis.call('SET', cursor_key, A.cursor)
    if tonumber(A.passed) >= 0 then redis.call('HSET', gaps, 'passed', A.passed) end
    if stored == A.read_from and tonumber(A.lost) > 0 then
      redis.call('HINCRBY', gaps, 'lost', tonumber(A.lost))
      redis.call('HSET', gaps, 'last_lost', A.lost, 'last_lost_after', A.read_from, 'last_lost_at', now)
    end
  end
end
return made
