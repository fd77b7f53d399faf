-- Notes that a submission's create is about to leave, only while its Idempotency-Key (if any)
-- still names it: a stalled attempt whose key a retry took over must not send a second create.
-- Returns 1 when noted (send), 0 when the key is another's (do not send).

if A.idempotency_key ~= '' and redis.call('GET', key_idempotency(prefix, A.idempotency_key)) ~= A.submission_id then
  return 0
end
-- A submission gone (expired, or lost with Redis's data) sends nothing, and is not made again
-- as a partial hash.
if redis.call('EXISTS', key_submission(prefix, A.submission_id)) == 0 then return 0 end
redis.call('HSET', key_submission(prefix, A.submission_id), 'sent_at', A.now)
return 1
