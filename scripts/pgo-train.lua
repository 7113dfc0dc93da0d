-- wrk script for scripts/pgo-build.sh: a different set of headers on every request, cycling through the file
-- named by PGO_HEADERS_FILE (one request per line, `Name: value` pairs separated by TABs, as printed by
-- `keyward sign --print-headers --count N`). Signed requests need their own signature each: the replay window
-- refuses a repeat.

local reqs = {}
local n = 0
local i = 0

init = function(args)
  local file = os.getenv("PGO_HEADERS_FILE")
  if not file or file == "" then error("PGO_HEADERS_FILE is not set") end
  for line in io.lines(file) do
    if line ~= "" then
      local h = { Host = wrk.headers["Host"] }
      for kv in string.gmatch(line, "[^\t]+") do
        local k, v = kv:match("^%s*([^:]+):%s*(.-)%s*$")
        if k then h[k] = v end
      end
      n = n + 1
      reqs[n] = wrk.format(nil, nil, h)
    end
  end
  if n == 0 then error("PGO_HEADERS_FILE has no requests: " .. file) end
end

request = function()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
