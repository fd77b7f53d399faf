-- Takes the members of a due list (downloads or polls) due by `now`, at most `limit`, and
-- pushes each to `until`, atomically, so two workers sweeping at once never take the same one.

local key = A.list == 'polls' and key_polls_due(prefix) or key_downloads_due(prefix)
local members = redis.call('ZRANGEBYSCORE', key, '-inf', A.now, 'LIMIT', 0, tonumber(A.limit))
for _, member in ipairs(members) do
  redis.call('ZADD', key, 'XX', A.until_ms, member)
end
return members
