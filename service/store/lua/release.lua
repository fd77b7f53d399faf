-- Puts queues this process took from the deliveries due list back for `at`, each only while it
-- is still leased to `leased_until` (this process's lease): a queue whose send was recorded
-- meanwhile, or that another process took after the lease ended, keeps the time that set.
-- The members ("subscription task") follow the named arguments. Returns how many moved.

local due, moved = key_deliveries_due(prefix), 0
local leased = tonumber(A.leased_until)
for i = ARG_COUNT + 1, #ARGV do
  if tonumber(redis.call('ZSCORE', due, ARGV[i])) == leased then
    redis.call('ZADD', due, 'XX', A.at, ARGV[i])
    moved = moved + 1
  end
end
return moved
