-- wrk script: the request line given on the command line, with a bearer key.
wrk.headers["Authorization"] = "Bearer bench"
