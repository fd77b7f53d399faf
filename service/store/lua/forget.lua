-- Forgets up to `count` deliveries of a deleted subscription (hashes, attempts, listings), and
-- once they are all gone its queues too. Called again until it returns 0: a subscription with a
-- long history is forgotten in bounded steps, never in one long script.

local sub, count = A.subscription_id, tonumber(A.count)
local listed = key_webhook_deliveries(prefix, sub)
local ids = redis.call('ZRANGE', listed, 0, count - 1)
for _, id in ipairs(ids) do
  local task = redis.call('HGET', key_delivery(prefix, id), 'task_id')
  if task then redis.call('ZREM', key_task_deliveries(prefix, task), id) end
  redis.call('DEL', key_delivery(prefix, id), key_delivery_attempts(prefix, id))
  redis.call('ZREM', listed, id)
end
if #ids > 0 then return #ids end
local queues = key_webhook_queues(prefix, sub)
for _, task in ipairs(redis.call('SRANDMEMBER', queues, count)) do
  redis.call('DEL', key_delivery_queue(prefix, sub .. ':' .. task))
  due_remove(sub, task)
  redis.call('SREM', queues, task)
end
return redis.call('SCARD', queues)
