-- tools/bench-random.lua — wrk script for tools/bench: every request GETs
-- PREFIX .. k, k drawn uniformly from 1..KEYS (a new draw per request).
--   wrk -t1 -c64 -d10s -s tools/bench-random.lua http://127.0.0.1:PORT -- KEYS [PREFIX]
-- KEYS defaults to 1, PREFIX to /api/k/. The KEYS requests are formatted once in
-- init(), so a request costs wrk one table lookup whatever KEYS is (building a
-- new string per request made wrk, not the server, the bottleneck for many keys).
-- No response() callback: wrk counts non-2xx answers and socket errors itself.
local reqs, n = {}, 1

function init(args)
    n = tonumber(args[1] or "1") or 1
    local prefix = args[2] or "/api/k/"
    for k = 1, n do
        reqs[k] = wrk.format(nil, prefix .. k)
    end
    -- a per-thread seed: the time plus the address of a fresh table
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    math.randomseed(os.time() + addr % 1000003)
end

function request()
    return reqs[math.random(n)]
end
