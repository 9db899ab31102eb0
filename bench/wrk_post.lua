-- POST one fixed body on every request and print a JSON summary for loadgen.py.
-- Usage: wrk [options] -s wrk_post.lua URL -- BODY_FILE [AUTHORIZATION]

function init(args)
    local file = assert(io.open(args[1], "rb"))
    wrk.body = file:read("*a")
    file:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    if args[2] ~= nil and args[2] ~= "" then
        wrk.headers["Authorization"] = args[2]
    end
end

-- errors.status counts responses with status >= 400; wrk does not count 3xx (none are expected here).
function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        '\nWRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
        summary.requests, summary.duration, summary.bytes,
        errors.connect, errors.read, errors.write, errors.timeout, errors.status,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
