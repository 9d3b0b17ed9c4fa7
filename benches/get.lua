-- wrk script: GET /v1/videos/{id} for ids read from $IDS_FILE (one per line), round-robin, with a bearer key.
local ids = {}
local n = 0
init = function(args)
  for line in io.lines(os.getenv("IDS_FILE")) do
    ids[#ids + 1] = line
  end
end
request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]
  return wrk.format("GET", "/v1/videos/" .. id, { ["Authorization"] = "Bearer bench" })
end
