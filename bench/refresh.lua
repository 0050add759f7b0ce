-- Refresh-token rotation, chained per connection. Run with as many wrk threads as
-- connections (-t N -c N), so that each thread's Lua state drives exactly one connection.
-- BENCH_TOKENS names a file with one pre-issued refresh token per line (one per connection,
-- each from its own sign-in); setup() hands line i to thread i. Every 200 response carries the
-- successor, which the next request presents: the chain is what a real client does.
local auth = os.getenv("BENCH_AUTH")
-- BENCH_PATH: /oauth/token unless set (the ceiling app's own path).
local path = os.getenv("BENCH_PATH") or "/oauth/token"
local tokens = {}
local next_thread = 0

function setup(thread)
  if #tokens == 0 then
    for line in io.lines(os.getenv("BENCH_TOKENS")) do
      if line ~= "" then
        tokens[#tokens + 1] = line
      end
    end
  end
  next_thread = next_thread + 1
  thread:set("token", tokens[next_thread])
end

local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Authorization"] = auth,
}

function request()
  -- Refresh tokens are base64url: safe in a form body as they are.
  return wrk.format("POST", path, headers,
    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  if status == 200 then
    local successor = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if successor then
      token = successor
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
