-- wrk script for bench/load.py: POSTs one image to /v1/predict on every request and prints a
-- one-line JSON summary (counts, errors, latency percentiles in microseconds) when done.
local path = assert(os.getenv("DIGITREC_BENCH_IMAGE"), "set DIGITREC_BENCH_IMAGE")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("DIGITREC_BENCH_TYPE") or "image/png"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "p50": %d, "p90": %d, ' ..
    '"p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
