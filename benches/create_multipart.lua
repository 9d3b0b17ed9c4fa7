-- wrk script: POST /v1/videos as multipart/form-data with a reference image ($IMAGE_FILE), as the SDKs send it.
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer bench"
local boundary = "benchboundary3f9a"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
local f = assert(io.open(os.getenv("IMAGE_FILE"), "rb"))
local image = f:read("*a")
f:close()
local function part(name, value)
  return "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. name .. "\"\r\n\r\n" .. value .. "\r\n"
end
wrk.body = part("prompt", "a benchmark fox") .. part("model", "sora-2-pro") .. part("size", "720x1280") .. part("seconds", "4")
  .. "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"ref.png\"\r\n"
  .. "Content-Type: image/png\r\n\r\n" .. image .. "\r\n--" .. boundary .. "--\r\n"
