-- wrk script: POST /v1/videos with a JSON body.
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt":"a benchmark fox","model":"sora-2-pro","size":"1280x720","seconds":"4"}'
