-- wrk script: POST pre-signed webhook bodies, every request a different delivery.
-- args: <file of "<signature> <body>" lines> <number of wrk threads>
-- Thread k of n takes lines k, k+n, k+2n, ...; past its last line it starts again and
-- counts a wrap (the harness reports it: a wrapped run re-sends deliveries).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  prepared, index, wrapped = {}, 0, 0
  local line_no = 0
  for line in io.lines(path) do
    if line_no % nthreads == id then
      local signature, body = line:match("^(%x+) (.*)$")
      prepared[#prepared + 1] = wrk.format("POST", "/webhooks/ittybit", {
        ["Content-Type"] = "application/json",
        ["Ittybit-Signature"] = signature,
      }, body)
    end
    line_no = line_no + 1
  end
end

function request()
  index = index + 1
  if index > #prepared then
    index, wrapped = 1, wrapped + 1
  end
  return prepared[index]
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("wrapped") or 0)
  end
  io.write(string.format("wrapped %d\n", total))
end
