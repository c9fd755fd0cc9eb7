-- wrk script of the pull-worker benchmark (bench/server.py, part server-workers): every wrk thread
-- is one worker with one keep-alive connection, which waits for each answer before its next request.
--
--   wrk -t W -c W -d MAX_S --timeout 30s -s bench/wrk_worker.lua URL -- KEY MODE LIST_LIMIT OUT_PREFIX
--
-- MODE "next": POST /v1/executions/claim {"worker_id": "w<tid>"}, then POST
-- /v1/executions/{id}/outcome {"success": true}, again and again; a 409 (nothing left to claim)
-- ends the worker.
-- MODE "list" (what the official cueapi-worker does, one job at a time): GET
-- /v1/executions/claimable?limit=LIST_LIMIT, then POST /v1/executions/{id}/claim {"worker_id"} down
-- that list until one is won (a 409 there means another worker had it first), its outcome, and list
-- again; an empty list ends the worker.
-- Each worker writes OUT_PREFIX<tid>: a line per response, "<kind> <status> <µs>" (kind: list, claim
-- or outcome; µs from just before the request was written to the whole answer), and "won <execution
-- id>" per claim it won. A worker that finds nothing left prints "DONE <tid>" and stops (the harness
-- interrupts wrk once every worker has; otherwise -d ends the run). done() prints "WRK <json>":
-- per-thread counts, whether it finished, first-request / last-response instants (CLOCK_REALTIME,
-- s), and wrk's socket errors.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(0, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local nthreads_setup = 0

function setup(thread)
  thread:set("tid", nthreads_setup)
  nthreads_setup = nthreads_setup + 1
  table.insert(threads, thread)
end

local mode, list_limit, worker_body
local post_headers, get_headers = {}, {}
local state -- what the next request is: "list", "claim" or "outcome"
local current -- the execution this worker holds
local queue, qi = {}, 1 -- MODE "list": the ids of the last list, and the next one to try
local kind, sent_at = nil, 0 -- the request in flight
local out -- OUT_PREFIX<tid>, written as answers come (wrk's exit flushes it should -d end the run)
local probed = false
-- Globals, not locals: done() reads them from each thread with thread:get().
got, cycles, conflicts, bad, first, last, finished = 0, 0, 0, 0, 0, 0, 0

function init(args)
  post_headers["Authorization"] = "Bearer " .. args[1]
  post_headers["Content-Type"] = "application/json"
  get_headers["Authorization"] = "Bearer " .. args[1]
  mode, list_limit = args[2], args[3]
  out = io.open(args[4] .. tid, "w")
  worker_body = '{"worker_id": "w' .. tid .. '"}'
  state = mode == "list" and "list" or "claim"
end

-- request() only reads the state (response() moves it on): wrk (4.1) calls it once on thread 0's
-- script before the run to check what it returns, and never sends that one.
function request()
  if not probed and tid == 0 then
    probed = true
  elseif first == 0 then
    first = now()
  end
  kind = state
  sent_at = now()
  if state == "outcome" then
    return wrk.format("POST", "/v1/executions/" .. current .. "/outcome", post_headers, '{"success": true}')
  elseif state == "list" then
    return wrk.format("GET", "/v1/executions/claimable?limit=" .. list_limit, get_headers)
  elseif mode == "list" then
    return wrk.format("POST", "/v1/executions/" .. queue[qi] .. "/claim", post_headers, worker_body)
  end
  return wrk.format("POST", "/v1/executions/claim", post_headers, worker_body)
end

local function finish()
  out:close()
  finished = 1
  io.stdout:write("DONE ", tid, "\n")
  io.stdout:flush()
  wrk.thread:stop()
end

function response(status, _, body)
  local t = now()
  got = got + 1
  last = t
  out:write(kind, " ", status, " ", math.floor((t - sent_at) * 1e6 + 0.5), "\n")
  if kind == "outcome" then
    if status >= 200 and status < 300 then
      cycles = cycles + 1
    else
      bad = bad + 1 -- the execution stays claimed: the store check afterwards shows it
      io.stderr:write("outcome ", status, ": ", body:sub(1, 300), "\n")
    end
    state = mode == "list" and "list" or "claim"
  elseif kind == "claim" then
    if status == 200 then
      current = body:match('"execution_id":"([%w_]+)"')
      if current then
        out:write("won ", current, "\n")
        state = "outcome"
      else
        bad = bad + 1
        io.stderr:write("claim 200 without an execution_id: ", body:sub(1, 300), "\n")
      end
    elseif status == 409 and mode == "list" then
      conflicts = conflicts + 1 -- another worker won it: the next one on the list
      qi = qi + 1
      if qi > #queue then
        state = "list"
      end
    elseif status == 409 then
      return finish() -- nothing left to claim
    else
      bad = bad + 1
      io.stderr:write("claim ", status, ": ", body:sub(1, 300), "\n")
    end
  else
    if status == 200 then
      queue = {}
      for id in body:gmatch('"execution_id":"([%w_]+)"') do
        queue[#queue + 1] = id
      end
      if #queue == 0 then
        return finish()
      end
      qi = 1
      state = "claim"
    else
      bad = bad + 1
      io.stderr:write("list ", status, ": ", body:sub(1, 300), "\n")
    end
  end
  if bad >= 100 then
    return finish() -- something is wrong; the harness reports the errors
  end
end

function done(summary, _, _)
  local parts = {}
  for _, t in ipairs(threads) do
    parts[#parts + 1] = string.format(
      '{"tid": %d, "got": %d, "cycles": %d, "conflicts": %d, "bad": %d, "finished": %d, '
        .. '"first": %.6f, "last": %.6f}',
      t:get("tid"), t:get("got"), t:get("cycles"), t:get("conflicts"), t:get("bad"), t:get("finished"),
      t:get("first"), t:get("last")
    )
  end
  local e = summary.errors
  io.stdout:write(string.format(
    'WRK {"requests": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d}, "threads": [%s]}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ", ")
  ))
  io.stdout:flush()
end
