-- wrk script for `make bench`: the bearer token, optional cycling over many conversations, and one
-- machine-readable result line.
--   BENCH_TOKEN   token for the Authorization header (empty: none)
--   BENCH_PATH    with BENCH_CYCLE > 0: a path with one %d, e.g. /v1/conversations/bench-cold-%d/summary;
--                 each request takes the next conversation (threads start at different offsets)
--   BENCH_CYCLE   how many conversations to cycle through (0: always the URL given to wrk)
-- done() prints "BENCHJSON {...}" with requests/s, latency percentiles (µs) and error counts.

local token = os.getenv("BENCH_TOKEN") or ""
if token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

local cycle = tonumber(os.getenv("BENCH_CYCLE") or "0") or 0
local path = os.getenv("BENCH_PATH") or "/"
local threads = {}
local counter = 0

function setup(thread)
   thread:set("offset", #threads * 7919)
   table.insert(threads, thread)
end

if cycle > 0 then
   function request()
      counter = counter + 1
      return wrk.format("GET", string.format(path, (counter + (offset or 0)) % cycle))
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCHJSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"max_us":%d,"bytes":%d,"errors_status":%d,"errors_connect":%d,"errors_read":%d,' ..
      '"errors_write":%d,"errors_timeout":%d}\n',
      summary.requests, secs, summary.requests / secs, latency.mean, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency.max, summary.bytes, e.status, e.connect,
      e.read, e.write, e.timeout))
end
