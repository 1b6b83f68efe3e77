-- wrk cross-check of the asyncio load client: one-row GETs on the raw ceiling app, uniform over the
-- seeded accounts (BENCH_MEMBERS). Used by bench.run when `wrk` is on PATH.
local n = tonumber(os.getenv("BENCH_MEMBERS") or "1000")

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  return wrk.format("GET", "/accounts/" .. math.random(1, n))
end
