-- wrk script: realistic Kie music callbacks. Each task sends text, first and complete;
-- about 10 % of requests repeat the previous one (Kie's duplicates). Bodies are ~2 KB.
local templates = {}
local tid = 0
local counter = 0
local previous = nil

local lyrics = string.rep("[Verse] Night city lights shining bright, neon rivers in the rain ", 12)

local function item(n)
  return '{"id":"trk-TASKID-' .. n .. '","audio_url":"https://tempfile.aiquickdraw.com/s/TASKID-' .. n
    .. '.mp3","stream_audio_url":"https://musicfile.api.box/TASKID-' .. n
    .. '","image_url":"https://tempfile.aiquickdraw.com/s/TASKID-' .. n
    .. '.jpeg","prompt":"' .. lyrics .. '","model_name":"chirp-v4-5","title":"Iron Man",'
    .. '"tags":"electrifying, rock","createTime":1786343609818,"duration":198.44}'
end

templates[0] = '{"code":200,"msg":"Text generation completed.","data":{"callbackType":"text",'
  .. '"task_id":"TASKID","data":[],"note":"' .. string.rep("x", 1900) .. '"}}'
templates[1] = '{"code":200,"msg":"First track generated successfully.","data":{"callbackType":"first",'
  .. '"task_id":"TASKID","data":[' .. item(1) .. ']}}'
templates[2] = '{"code":200,"msg":"All generated successfully.","data":{"callbackType":"complete",'
  .. '"task_id":"TASKID","data":[' .. item(1) .. ',' .. item(2) .. ']}}'

local next_thread = 0
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  -- `thread_id` is the global that setup() gave this thread.
  tid = tonumber(thread_id) or 0
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
