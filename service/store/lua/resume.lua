-- Makes the waiting queues of an enabled subscription due now, `count` of its queue set at a
-- time from `cursor` (an SSCAN cursor: a subscription with a long backlog is resumed in steps,
-- none of which holds Redis for long). Returns the next cursor ('0' when done), or 'disabled'.

local sub = A.subscription_id
if redis.call('HGET', key_webhook(prefix, sub), 'enabled') ~= '1' then return 'disabled' end
local found = redis.call('SSCAN', key_webhook_queues(prefix, sub), A.cursor, 'COUNT', tonumber(A.count))
for _, waiting in ipairs(found[2]) do
  if redis.call('LLEN', key_delivery_queue(prefix, sub .. ':' .. waiting)) > 0 then
    -- NX: a queue waiting for its retry keeps that time.
    due_set(sub, waiting, A.now, 'NX')
  end
end
return found[1]
