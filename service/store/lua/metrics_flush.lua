-- Adds one process's buffered measurements (store/metrics.py MetricsBuffer) to the metrics hash,
-- once per `flush_id`: a flush re-sent after a lost reply, or tried again after a failure, adds
-- nothing twice. Pairs (field, amount) follow the named arguments; a field ending `|sum` is a
-- histogram's sum (a float), the rest are counts. An amount that is not a number is skipped.

if not redis.call('SET', key_metrics_flush(prefix, A.flush_id), 1, 'NX', 'EX', 3600) then return 0 end
local added = 0
for i = ARG_COUNT + 1, #ARGV - 1, 2 do
  local field, amount = ARGV[i], tonumber(ARGV[i + 1])
  if amount then
    if string.sub(field, -4) == '|sum' then
      redis.call('HINCRBYFLOAT', key_metrics(prefix), field, ARGV[i + 1])
    elseif amount == math.floor(amount) then
      redis.call('HINCRBY', key_metrics(prefix), field, amount)
    end
    added = added + 1
  end
end
return added
