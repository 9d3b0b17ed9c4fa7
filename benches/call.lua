-- wrk script: one request, described by the environment: BENCH_KEY (bearer key), and for a create
-- BENCH_BODY (a JSON body, sent as POST with content-type application/json).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
