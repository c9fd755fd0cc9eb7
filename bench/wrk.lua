-- wrk script of the server benchmarks (bench/server.py): one kind of request, repeated.
--
--   wrk -t T -c C -d MAX_S --timeout 30s -s bench/wrk.lua URL -- \
--       METHOD PATH BODY KEY LIMIT IDS_FILE THREADS CAPTURE_PATTERN CAPTURE_PREFIX TAG
--
-- PATH and BODY may hold {ID} (the next line of IDS_FILE given to this thread: thread t of T takes
-- lines t, t + T, ...) and {NAME} (unique per request: TAG-thread-n). KEY is an API key ("-": none).
-- LIMIT is the number of requests each thread sends (0: as many as fit in MAX_S; with IDS_FILE
-- it is the thread's share of the ids). A thread that has its LIMIT answers prints "DONE" and
-- stops; the harness interrupts wrk once every thread has (wrk itself sleeps for MAX_S).
-- CAPTURE_PATTERN ("-": none) is a Lua pattern matched against each 2xx body; its capture is
-- appended to CAPTURE_PREFIX<thread>. done() prints one line, "WRK <json>", with wrk's latency
-- percentiles (µs, every response) and per-thread counts and first-request / last-response
-- instants (CLOCK_REALTIME, s).

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

local method, path, body, limit, ids, pattern, out, tag
local headers = {}
local shown = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
sent, got, ok, bad, first, last = 0, 0, 0, 0, 0, 0

function init(args)
  method, path, body = args[1], args[2], args[3]
  if args[4] ~= "-" then
    headers["Authorization"] = "Bearer " .. args[4]
  end
  if body ~= "" then
    headers["Content-Type"] = "application/json"
  end
  limit = tonumber(args[5])
  local nthreads = tonumber(args[7])
  if args[6] ~= "-" then
    ids = {}
    local i = 0
    for line in io.lines(args[6]) do
      if line ~= "" then
        if i % nthreads == tid then
          ids[#ids + 1] = line
        end
        i = i + 1
      end
    end
    if limit == 0 or limit > #ids then
      limit = #ids
    end
  end
  if args[8] ~= "-" then
    pattern = args[8]
    out = io.open(args[9] .. tid, "w")
  end
  tag = args[10] .. "-" .. tid .. "-"
end

local function build(i)
  local p, b = path, body
  if ids then
    p = p:gsub("{ID}", ids[i])
    b = b:gsub("{ID}", ids[i])
  end
  b = b:gsub("{NAME}", tag .. i)
  return wrk.format(method, p, headers, b)
end

local probed = false

function request()
  if not probed and tid == 0 then
    -- wrk (4.1) calls request() once on thread 0's script to check what it returns, and never
    -- sends that one: it takes nothing from the count. (Were it sent, "got" would exceed "sent":
    -- the harness checks.)
    probed = true
    return build(1)
  end
  if limit > 0 and sent >= limit then
    return "" -- this connection idles; the thread stops when its last answer comes
  end
  sent = sent + 1
  if first == 0 then
    first = now()
  end
  return build(sent)
end

function response(status, _, resp)
  got = got + 1
  last = now()
  if status >= 200 and status < 300 then
    ok = ok + 1
    if pattern then
      local v = resp:match(pattern)
      if v then
        out:write(v, "\n")
      end
    end
  else
    bad = bad + 1
    if shown < 3 then
      shown = shown + 1
      io.stderr:write("status ", status, ": ", resp:sub(1, 300), "\n")
    end
  end
  if limit > 0 and got >= limit then
    if out then
      out:close()
      out = nil
    end
    io.stdout:write("DONE ", tid, "\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, _)
  local parts = {}
  for _, t in ipairs(threads) do
    parts[#parts + 1] = string.format(
      '{"tid": %d, "sent": %d, "got": %d, "ok": %d, "bad": %d, "first": %.6f, "last": %.6f}',
      t:get("tid"), t:get("sent"), t:get("got"), t:get("ok"), t:get("bad"), t:get("first"), t:get("last")
    )
  end
  local e = summary.errors
  io.stdout:write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, '
      .. '"mean": %.1f}, "threads": [%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(parts, ", ")
  ))
  io.stdout:flush()
end
