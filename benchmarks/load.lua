-- wrk script for benchmarks/load.py: GET / with one of N pre-created sessions.
--
-- load.py runs wrk with as many threads as connections, so every wrk thread
-- drives exactly one keep-alive connection with at most one request in
-- flight. That makes the bookkeeping below exact: the response a thread
-- receives always belongs to the last request it generated. Thread i owns the
-- session slots i, i+T, i+2T, ... (T threads) and visits them round-robin, so
-- no slot is ever in flight twice.
--
-- Environment (set by load.py):
--   LOAD_COOKIES  file with one cookie value per line, line k+1 = slot k
--   LOAD_RESULTS  file that done() writes, one line per slot
--   LOAD_THREADS  number of wrk threads (= connections)
--   LOAD_SESSIONS number of slots (lines in LOAD_COOKIES)
--   LOAD_COOKIE   cookie name
--
-- Every slot keeps its cookie for the whole run, as a browser would if the
-- server never replaced it: a Set-Cookie that changes it (a new value, or an
-- empty one that clears it) is counted, not adopted, so that the check in
-- load.py stays on the session the slot started with.
--
-- Counts leave the threads as one string global per slot ("slot<N>"), not as
-- tables: wrk 4.1's thread:get() pops one value too many from the thread's
-- Lua stack for every table it copies (script_copy_value pops the table, then
-- script_thread_get pops again), which corrupts memory and can crash wrk at
-- the end of a run. Strings and numbers are copied safely.

local cookie_name = os.getenv("LOAD_COOKIE") or "demo_session"
local threads = {}
local next_id = 0

-- Main Lua state: number the threads so each can find its slots.
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

-- Thread state from here to response().
function init(args)
   local nthreads = tonumber(os.getenv("LOAD_THREADS"))
   local all = {}
   for line in io.lines(os.getenv("LOAD_COOKIES")) do
      all[#all + 1] = line
   end
   slots = {}    -- slot numbers this thread owns
   cookies = {}  -- slot -> its cookie value
   ok = {}       -- slot -> 200 responses
   doubt = {}    -- slot -> requests whose effect is unknown (aborted, non-200)
   bad = {}      -- slot -> non-200 responses
   changed = {}  -- slot -> Set-Cookie headers that changed or cleared its cookie
   unsaved = {}  -- slot -> 200 pages showing "Visit number 0": the store was
                 --         unavailable and the increment was not saved
   unread = {}   -- slot -> 200 pages without a "Visit number N" at all
   for s = id, #all - 1, nthreads do
      slots[#slots + 1] = s
      cookies[s] = all[s + 1]
      ok[s], doubt[s], bad[s], changed[s], unsaved[s], unread[s] = 0, 0, 0, 0, 0, 0
      publish(s)
   end
   pos = 0
   pending = nil
end

-- Make slot s's counts readable from done() (see the note at the top).
function publish(s)
   _G["slot" .. s] = string.format("%d %d %d %d %d %d %d", s, ok[s], doubt[s], bad[s],
      changed[s], unsaved[s], unread[s])
end

function request()
   if pending ~= nil then
      -- The previous request got no response: the connection failed (or,
      -- for thread 0, wrk's own dry run of request()). It may or may not
      -- have reached the app.
      doubt[pending] = doubt[pending] + 1
      publish(pending)
   end
   pos = pos % #slots + 1
   local s = slots[pos]
   pending = s
   return wrk.format("GET", "/", { ["Cookie"] = cookie_name .. "=" .. cookies[s] })
end

local prefix = cookie_name .. "="

function response(status, headers, body)
   local s = pending
   pending = nil
   if s == nil then
      return
   end
   if status ~= 200 then
      bad[s] = bad[s] + 1
      doubt[s] = doubt[s] + 1
      publish(s)
      return
   end
   for name, value in pairs(headers) do
      if string.lower(name) == "set-cookie" and string.sub(value, 1, #prefix) == prefix then
         local v = string.match(value, "^[^=]*=([^;]*)")
         if v ~= cookies[s] then
            changed[s] = changed[s] + 1
         end
      end
   end
   local shown = body and string.match(body, "Visit number (%d+)")
   if shown == nil then
      unread[s] = unread[s] + 1
   elseif shown == "0" then
      unsaved[s] = unsaved[s] + 1
   end
   ok[s] = ok[s] + 1
   publish(s)
end

-- Main state again: gather every thread's slots into LOAD_RESULTS. A line
-- "pending N" marks slot N's request that was still in flight at the end.
function done(summary, latency, requests)
   local nthreads = tonumber(os.getenv("LOAD_THREADS"))
   local nslots = tonumber(os.getenv("LOAD_SESSIONS"))
   local out = assert(io.open(os.getenv("LOAD_RESULTS"), "w"))
   for _, t in ipairs(threads) do
      for s = t:get("id"), nslots - 1, nthreads do
         out:write(t:get("slot" .. s), "\n")
      end
      local last = t:get("pending")
      if last ~= nil then
         out:write("pending ", last, "\n")
      end
   end
   out:close()
end
