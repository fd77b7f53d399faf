-- Takes up to `limit` queues due by `now` from the deliveries due list, leasing each to
-- `until_ms`, but none of the subscriptions named after the arguments (they have as many sends
-- in flight as they may): their queues stay due, and a busy subscriber's backlog never stands
-- in front of anyone else's, unless it has more than LOOK_AT queues due (looked at per call).
-- A queue once taken is not taken again until its lease ends, by this process or another: a
-- call whose reply was lost leaves its queues to come back when their lease ends.

local due, limit, now = key_deliveries_due(prefix), tonumber(A.limit), A.now
local busy = {}
for i = ARG_COUNT + 1, #ARGV do busy[ARGV[i]] = true end
local LOOK_AT = math.max(10 * limit, 5000)
local taken, looked, page = {}, 0, math.max(limit, 500)
while #taken < limit and looked < LOOK_AT do
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', looked, page)
  if #members == 0 then break end
  looked = looked + #members
  for _, member in ipairs(members) do
    local sub = string.match(member, '^(%S+) ')
    if sub and not busy[sub] then
      taken[#taken + 1] = member
      if #taken == limit then break end
    end
  end
end
-- Pushed only after the scan: pushing during it would shift the offsets it pages by.
for _, member in ipairs(taken) do redis.call('ZADD', due, 'XX', A.until_ms, member) end
return taken
