-- wrk script for perf/bench_sim.sh: each wrk thread loads its share of the
-- pre-signed signed_command bodies (line i goes to thread i % THREADS, so a
-- car's commands stay on one thread and in counter order) and sends them
-- in file order over keep-alive connections.
-- args: FILE THREADS TOKEN
local reqs = {}
local n = 0
local i = 0
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  local file, threads, token = args[1], tonumber(args[2]), args[3]
  local me = tonumber(tid)
  local headers = {["Authorization"] = "Bearer " .. token,
                   ["Content-Type"] = "application/json"}
  local idx = 0
  for line in io.lines(file) do
    if idx % threads == me then
      local vin, body = line:match("^(%S+)\t(.*)$")
      n = n + 1
      reqs[n] = wrk.format("POST", "/api/1/vehicles/" .. vin .. "/signed_command", headers, body)
    end
    idx = idx + 1
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
