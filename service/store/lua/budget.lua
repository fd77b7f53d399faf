-- A rolling budget on Redis's own clock (creates per window, polls per second), shared by every
-- process and machine.
--   acquire  returns 0 and takes `slot`, or the ms until a slot frees up
--   settle   moves a taken slot to now: the upstream counted it when it arrived, not when sent
--   pause    holds the budget until now + pause_ms, never shortening a longer hold

local window_key, pause_key = key_limit_window(prefix, A.name), key_limit_pause(prefix, A.name)
local now, window = now_ms(), tonumber(A.window_ms)

if A.mode == 'acquire' then
  -- A re-send after a lost reply finds its slot taken: it has it, and counts once.
  if redis.call('ZSCORE', window_key, A.slot) then return 0 end
  local paused = tonumber(redis.call('GET', pause_key) or '0')
  if paused > now then return paused - now end
  redis.call('ZREMRANGEBYSCORE', window_key, '-inf', now - window)
  if redis.call('ZCARD', window_key) < tonumber(A.limit) then
    redis.call('ZADD', window_key, now, A.slot)
    redis.call('PEXPIRE', window_key, window)
    return 0
  end
  local oldest = redis.call('ZRANGE', window_key, 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
elseif A.mode == 'settle' then
  redis.call('ZADD', window_key, 'XX', now, A.slot)
  redis.call('PEXPIRE', window_key, window)
  return now
end
local pause_ms = tonumber(A.pause_ms)
local until_ms = now + pause_ms
if until_ms > tonumber(redis.call('GET', pause_key) or '0') then
  redis.call('SET', pause_key, until_ms, 'PX', pause_ms)
end
return until_ms
