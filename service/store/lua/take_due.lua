-- Takes the members of a due list (downloads or polls; deliveries have take_deliveries.lua) due by `now`, at most `limit`, and
-- pushes each to `until`, atomically, so two workers sweeping at once do not take the same one
-- (but for the re-send rule below, whose rare duplicates the claims make harmless).

local lists = {polls = key_polls_due(prefix), downloads = key_downloads_due(prefix)}
local key = lists[A.list]
if not key then return redis.error_reply('unknown due list ' .. tostring(A.list)) end
local members = redis.call('ZRANGEBYSCORE', key, '-inf', A.now, 'LIMIT', 0, tonumber(A.limit))
-- A re-send after a lost reply finds its members already pushed to exactly `until`: it takes
-- them again rather than leaving them to wait out the grace (a duplicate job is harmless).
if #members < tonumber(A.limit) then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', key, A.until_ms, A.until_ms, 'LIMIT', 0,
      tonumber(A.limit) - #members)) do
    members[#members + 1] = member
  end
end
for _, member in ipairs(members) do
  redis.call('ZADD', key, 'XX', A.until_ms, member)
end
return members
