-- Adds one process's buffered measurements (store/metrics.py MetricsBuffer) to the metrics hash,
-- each batch once: a process numbers its batches (`seq`, from 1) and a batch at or below the
-- last one added for `process` adds nothing (a re-send after a lost reply, a retry later).
-- Pairs (field, amount) follow the named arguments; a field ending `|sum` is a histogram's sum
-- (a finite decimal), the rest are whole counts. Every pair is checked before anything is
-- written: a batch with one bad amount is refused whole (Redis would keep half of it).
-- Returns the number of pairs added (0: already added; -1: refused).

local seq = tonumber(A.seq)
local last_key = key_metrics_flushed(prefix, A.process)
if not seq then return -1 end
if seq <= (tonumber(redis.call('GET', last_key)) or 0) then return 0 end
for i = ARG_COUNT + 1, #ARGV - 1, 2 do
  local amount = ARGV[i + 1]
  if string.sub(ARGV[i], -4) == '|sum' then
    local x = tonumber(amount)
    if not x or x ~= x or x == math.huge or x == -math.huge or not string.match(amount, '^%-?[%d.eE+%-]+$') then
      return -1
    end
  elseif not string.match(amount, '^%-?%d+$') then
    return -1
  end
end
for i = ARG_COUNT + 1, #ARGV - 1, 2 do
  if string.sub(ARGV[i], -4) == '|sum' then
    redis.call('HINCRBYFLOAT', key_metrics(prefix), ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', key_metrics(prefix), ARGV[i], ARGV[i + 1])
  end
end
-- Kept a week: a process that sends again after longer started anew (a new process id).
redis.call('SET', last_key, seq, 'EX', 604800)
return (#ARGV - ARG_COUNT) / 2
