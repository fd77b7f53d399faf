-- Puts queues this process took from the deliveries due list back for `at`, each only while it
-- is still leased to `leased_until` (this process's lease): a queue whose send was recorded
-- meanwhile, or that another process took after the lease ended, keeps the time that set.
-- The members ("subscription task") follow the named arguments. Returns how many moved.

local moved, leased = 0, tonumber(A.leased_until)
for i = ARG_COUNT + 1, #ARGV do
  local sub, task = string.match(ARGV[i], '^(%S+) (.+)$')
  if sub and due_at(sub, task) == leased then
    due_set(sub, task, A.at, 'XX')
    moved = moved + 1
  end
end
return moved
