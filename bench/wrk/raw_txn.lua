-- wrk cross-check of the asyncio load client: INSERT+UPDATE transactions on the raw ceiling app, uniform
-- over the seeded accounts (BENCH_MEMBERS). Used by bench.run when `wrk` is on PATH.
local n = tonumber(os.getenv("BENCH_MEMBERS") or "1000")
local headers = {["Content-Type"] = "application/json"}

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  local body = string.format('{"account_id":%d,"amount":%d}', math.random(1, n), math.random(1, 10))
  return wrk.format("POST", "/txn", headers, body)
end
