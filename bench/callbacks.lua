-- wrk script: realistic Kie music callbacks. Each task sends text, first and complete;
-- about 10 % of requests repeat the previous one (Kie's duplicates). Bodies are ~2 KB.
-- The bodies are bench/callbacks.txt (one line per stage, TASKID for the task id), shared with the
-- Python generator (bench/callbacks.py), so both send the same bytes.
local templates = {}
local tid = 0
local counter = 0
local previous = nil

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local stage = 0  -- templates[counter % 3]: 0 text, 1 first, 2 complete
for line in io.lines(here .. "callbacks.txt") do
  templates[stage] = line
  stage = stage + 1
end

local next_thread = 0
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  -- `thread_id` is the global that setup() gave this thread. A run given a stream (`wrk ... URL --
  -- STREAM`, 0-255 less the threads) starts its task ids there, so it makes tasks of its own
  -- rather than repeating an earlier run's, whose stages would all be duplicates by then.
  if args[1] ~= nil and tonumber(args[1]) == nil then
    error("callbacks.lua takes a stream number after --, got " .. tostring(args[1]))
  end
  tid = (tonumber(args[1]) or 0) + (tonumber(thread_id) or 0)
  math.randomseed(1234 + tid)
end

local headers = {["Content-Type"] = "application/json"}

function request()
  if previous ~= nil and math.random() < 0.10 then
    return previous
  end
  local task = string.format("%02x%014x", tid, math.floor(counter / 3))
  local body = string.gsub(templates[counter % 3], "TASKID", task)
  counter = counter + 1
  previous = wrk.format("POST", "/callbacks/kie", headers, body)
  return previous
end
