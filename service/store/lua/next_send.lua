-- Reads, in one call, what sending a queue's head needs: the subscription, the head delivery
-- and its event-log entry (entry ids are the tail of delivery ids). Writes nothing.
-- Returns {subscription fields, delivery fields, entry id, entry fields}; empty where absent.

local sub, task = A.subscription_id, A.task_id
local subscription = redis.call('HGETALL', key_webhook(prefix, sub))
local head = redis.call('LINDEX', key_delivery_queue(prefix, sub .. ':' .. task), 0)
if not head then return {subscription, {}, '', {}} end
local delivery = redis.call('HGETALL', key_delivery(prefix, head))
local entry_id = string.sub(head, #('dlv_' .. sub .. '_') + 1)
local found = redis.call('XRANGE', key_events(prefix), entry_id, entry_id)
if #found == 0 then return {subscription, delivery, '', {}} end
return {subscription, delivery, found[1][1], found[1][2]}
