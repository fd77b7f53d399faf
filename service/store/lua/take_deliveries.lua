-- Takes up to `limit` queues due by `now`, leasing each to `until_ms`, and from no subscription
-- more than it has room for: `per_subscription` sends in flight at once, less those it already
-- has (pairs of subscription id and count after the named arguments). A subscription with no
-- room is stepped past in one move however long its backlog, so it stands in front of nobody.
-- A queue once taken is not taken again until its lease ends, by this process or another: a
-- call whose reply was lost leaves its queues to come back when their lease ends.
-- Returns "subscription task" members.

local due, limit, now, per = key_deliveries_due(prefix), tonumber(A.limit), A.now, tonumber(A.per_subscription)
local sending = {}
for i = ARG_COUNT + 1, #ARGV - 1, 2 do sending[ARGV[i]] = tonumber(ARGV[i + 1]) end
local taken, touched, legacy, offset = {}, {}, {}, 0
-- A subscription in range has a queue due (its score is its earliest), so each one looked at
-- gives at least one, but for those with no room: at most `limit` plus those are looked at.
while #taken < limit do
  local subs = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', offset, 100)
  if #subs == 0 then break end
  offset = offset + #subs
  for _, sub in ipairs(subs) do
    local room = math.min(per - (sending[sub] or 0), limit - #taken)
    if string.find(sub, ' ', 1, true) then
      legacy[#legacy + 1] = sub  -- a "sub task" member of the one-level list of an older version
    elseif room > 0 then
      local key = key_subscription_due(prefix, sub)
      for _, task in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, room)) do
        redis.call('ZADD', key, 'XX', A.until_ms, task)
        taken[#taken + 1] = sub .. ' ' .. task
      end
      touched[#touched + 1] = sub
    end
    if #taken >= limit then break end
  end
end
-- Their earliest times moved on: set only after the scan, which pages by offset.
for _, sub in ipairs(touched) do due_refresh(sub) end
-- Moved to the two levels, keeping their time: taken from there by the next call.
for _, member in ipairs(legacy) do
  local at = redis.call('ZSCORE', due, member)
  redis.call('ZREM', due, member)
  local sub, task = string.match(member, '^(%S+) (.+)$')
  if sub then due_set(sub, task, at, 'NX') end
end
return taken
