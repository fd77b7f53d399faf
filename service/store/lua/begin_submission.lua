-- Claims an Idempotency-Key for a new submission, atomically with creating that submission
-- (its fields follow the named arguments as pairs). `take_over` names an earlier owner the key
-- may be taken from (its attempt failed or stalled). Returns the key's owner.

if A.idempotency_key ~= '' then
  local idem_key = key_idempotency(prefix, A.idempotency_key)
  local existing = redis.call('GET', idem_key)
  if existing and existing ~= A.take_over then return existing end
  redis.call('SET', idem_key, A.submission_id, 'EX', tonumber(A.ttl_s))
end
redis.call('HSET', key_submission(prefix, A.submission_id), unpack(ARGV, ARG_COUNT + 1))
return A.submission_id
