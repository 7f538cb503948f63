-- zcrm inside nginx (README "OpenResty / nginx"), end to end: an application nginx
-- (spec/nginx/, started by spec/support/app.lua) with one zcrm client per worker,
-- sharing its token through lua_shared_dict zcrm_tokens, against the simulator.
--
--  * delink works from content_by_lua, access_by_lua and an ngx.timer.at callback;
--  * the event loop is not blocked: one worker answers an unrelated location fast while
--    20 slow delinks (and a slow token grant) are in flight in the thread pool;
--  * 200 concurrent requests over 4 workers whose token just expired (Zoho's 401, or the
--    60 s margin) cause exactly one token grant, and all succeed;
--  * a refresh holder that dies (its callback raises) or hangs does not block the others
--    past lock_timeout;
--  * no [error], [crit], [alert] or [emerg] in either nginx's error log.
--
-- nginx's Lua is always LuaJIT, so this needs build/5.1/zcrm/core.so (make LUA=luajit;
-- `make test` builds it) whichever Lua runs busted:
--   make test SPECS=spec/07-nginx_spec.lua            (busted under lua5.4)
--   make test LUA=luajit SPECS=spec/07-nginx_spec.lua (busted under LuaJIT)

local socket = require "socket"
local cjson = require "cjson"
local simulator = require "spec.support.simulator"
local appmod = require "spec.support.app"
local nginx = require "spec.support.nginx"

local RECORD = "3477061000007606020"
local RELATED = "Price_Books"

local make_ids = require("spec.support.helpers").ids

local function say(fmt, ...)
  io.stderr:write("\n    [07-nginx] ", string.format(fmt, ...))
  io.stderr:flush()
end

-- The relation of one delink answer from the app: HTTP 200, every id delinked.
local function assert_delinked(r, n, what)
  local where = (what or r.path or "") .. ": " .. tostring(r.body)
  assert.equal(200, r.status, where)
  assert.is_table(r.json, where)
  assert.equal(n, r.json.succeeded, where)
  assert.equal(0, r.json.failed, where)
  assert.equal(cjson.null, r.json.err, where)
end

local function error_lines(srv)
  return table.concat(srv:error_lines(), "\n")
end

-- Lines that name zcrm, the app or a refresh, at any level: what the library logged.
local function notable_lines(srv)
  local out = {}
  for line in srv:error_log():gmatch("[^\n]+") do
    if line:match("zcrm") or line:match("refresh") or line:match("app:") or line:match("%[warn%]") then
      out[#out + 1] = line
    end
  end
  return out
end

describe("zcrm in nginx", function()
  local sim, app

  local core_ok, core_why = appmod.check_core()

  local function start_app(opts)
    assert(core_ok, core_why)
    opts.sim = sim
    app = appmod.start(opts)
    return app
  end

  local function assert_clean_logs()
    if app then assert.equal("", error_lines(app), "the app's error log") end
    assert.equal("", error_lines(sim), "the simulator's error log")
  end

  local function wait_for(what, timeout, fn)
    local t0 = socket.gettime()
    while socket.gettime() - t0 < timeout do
      local v = fn()
      if v then return v end
      socket.sleep(0.005)
    end
    error("timed out after " .. timeout .. " s waiting for " .. what, 2)
  end

  setup(function()
    sim = simulator.start { workers = 2 }
  end)

  teardown(function()
    if sim then sim:stop() end
  end)

  before_each(function()
    sim:reset()
    sim:oauth_client(appmod.OAUTH)
  end)

  after_each(function()
    if app then app:stop() end
    app = nil
  end)

  it("has the LuaJIT build of the C core that nginx loads (build/5.1/zcrm/core.so)", function()
    assert(core_ok, core_why)
  end)

  describe("delinks", function()
    it("from content_by_lua, access_by_lua and an ngx.timer.at callback, with one token grant", function()
      start_app { workers = 2 }
      local kinds = { "content", "access", "timer" }
      local all = make_ids(9)
      sim:seed("Products", RECORD, RELATED, all)
      for k, kind in ipairs(kinds) do
        local ids = { all[3 * k - 2], all[3 * k - 1], all[3 * k] }
        local r
        if kind == "timer" then
          r = { status = 200, json = app:timer_delink("Products", RECORD, RELATED, ids) }
        else
          local status, json = app:delink(kind, "Products", RECORD, RELATED, ids)
          r = { status = status, json = type(json) == "table" and json or nil, body = json }
        end
        r.body = r.body or cjson.encode(r.json)
        assert_delinked(r, 3, kind)
        assert.equal(kind, r.json.phase)
        for i, e in ipairs(r.json.results) do
          assert.same({ id = ids[i], status = "success", code = "SUCCESS" }, e)
        end
        if kind == "access" then assert.is_true(r.json.seen_in_content) end
        -- Really removed in the simulator: what is left is the next kinds' ids.
        local left = {}
        for i = 3 * k + 1, #all do left[#left + 1] = all[i] end
        assert.same(left, sim:relations("Products", RECORD, RELATED))
      end
      local c = sim:counters()
      assert.equal(3, c.requests)
      assert.equal(1, c.token_grants, "the token is fetched once and shared")
      assert_clean_logs()
    end)
  end)

  it("retries in the event loop: a 429 with Retry-After and a reset connection, all delinked", function()
    start_app { workers = 1 }
    local ids = make_ids(250) -- 3 calls: one waits for its retry while others are in flight
    sim:seed("Products", RECORD, RELATED, ids)
    sim:inject { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "1" }, count = 1 }
    sim:inject { action = "reset", count = 1 }
    local status, json = app:delink("content", "Products", RECORD, RELATED, ids)
    assert.equal(200, status, cjson.encode(json))
    assert.equal(250, json.succeeded, cjson.encode(json))
    assert.is_true(json.t_end - json.t_start >= 1, "the retry waited for Retry-After")
    assert.same({}, sim:relations("Products", RECORD, RELATED))
    assert.equal(5, sim:counters().requests)
    assert_clean_logs()
  end)

  it("runs the shipped example (examples/nginx.conf and examples/crm.lua)", function()
    assert(core_ok, core_why)
    -- The example as a user installs it: zcrm under /usr/local (here a DESTDIR), crm.lua
    -- in the server's lua/ directory; only the paths and the port are replaced.
    local dest = nginx.mktemp("zcrm-example-install")
    -- Without the sanitizer preload and the settings of a make that may be running this.
    assert.is_true(nginx.run(nginx.clean("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C " .. nginx.q(nginx.repo_dir)
      .. " LUA=luajit install DESTDIR=" .. nginx.q(dest) .. " PREFIX=/usr/local BUILD=build/5.1 >/dev/null")))
    local conf = assert(nginx.read_file(nginx.repo_dir .. "/examples/nginx.conf"))
    conf = conf:gsub("/usr/local/", dest .. "/usr/local/")
      :gsub("%$prefix/lua/", nginx.repo_dir .. "/examples/")
      :gsub("listen 127%.0%.0%.1:8080;", "listen 127.0.0.1:@PORT@;")
      :gsub("worker_processes auto;", "@USER_DIRECTIVE@\nworker_processes @WORKERS@;\npid @PREFIX@/nginx.pid;")
      :gsub("\nhttp {\n", "\nhttp {\n    access_log off;\n    client_body_temp_path @PREFIX@/client_body_temp;\n"
        .. "    proxy_temp_path @PREFIX@/proxy_temp;\n    fastcgi_temp_path @PREFIX@/fastcgi_temp;\n"
        .. "    uwsgi_temp_path @PREFIX@/uwsgi_temp;\n    scgi_temp_path @PREFIX@/scgi_temp;\n")
    local template = dest .. "/nginx.conf.in"
    nginx.write_file(template, conf)
    local path = "/delink?module=Products&record=" .. RECORD .. "&related=" .. RELATED
    local example = nginx.start { what = "example nginx", name = "zcrm-example", template = template,
      ready_path = path, workers = 2,
      env = { ZCRM_CLIENT_ID = appmod.OAUTH.client_id, ZCRM_CLIENT_SECRET = appmod.OAUTH.client_secret,
              ZCRM_REFRESH_TOKEN = appmod.OAUTH.refresh_token, ZCRM_API_DOMAIN = sim.url,
              ZCRM_ACCOUNTS_URL = sim.url } }
    local ok, err = pcall(function()
      local ids = make_ids(3, 500)
      sim:seed("Products", RECORD, RELATED, ids)
      local status, body = nginx.request("POST", example.url .. path, table.concat(ids, "\n"))
      assert.equal(200, status, body)
      local doc = cjson.decode(body)
      assert.equal(3, doc.succeeded, body)
      assert.same({}, sim:relations("Products", RECORD, RELATED))
      status, body = nginx.request("POST", example.url .. path, "12a4")
      assert.equal(400, status, body)
      assert.matches("INVALID_ARGUMENT", body)
      assert.equal(1, sim:counters().token_grants)
      assert.equal("", table.concat(example:error_lines(), "\n"), "the example's error log")
    end)
    example:stop()
    nginx.run(nginx.clean("rm -rf " .. nginx.q(dest)))
    assert(ok, err)
  end)

  describe("does not block the worker's event loop", function()
    it("one worker answers 200 pings with p99 < 100 ms while 20 delinks wait 500 ms each", function()
      -- The first time a worker has N zcrm calls in flight, nginx's lua module creates N
      -- Lua VMs for run_worker_thread, on the event loop (about 3 ms each here; make
      -- nginx-latency shows a cold first burst). zcrm.init_worker{warm = 20} does that at
      -- worker start instead, from a timer: measured here is the steady state.
      start_app { workers = 1, lock_timeout = 2, warm = 20 }

      -- A clean simulator (counters, in-flight peak) and a token granted at full speed
      -- (an unseeded id: INVALID_DATA, but the token is granted).
      sim:reset()
      sim:oauth_client(appmod.OAUTH)
      local status, warm = app:delink("content", "Products", RECORD, RELATED, { "1" })
      assert.equal(200, status)
      assert.equal("INVALID_DATA", warm.err, cjson.encode(warm))

      local ids = make_ids(20)
      sim:seed("Products", RECORD, RELATED, ids)
      sim:config { latency_ms = 500 }
      local paths = {}
      for i, id in ipairs(ids) do paths[i] = appmod.delink_path("content", "Products", RECORD, RELATED, { id }) end

      local job = app:parallel(paths, 20)
      wait_for("a delink in flight at the simulator", 5, function() return sim:counters().in_flight >= 1 end)
      local pings = app:pings(200, 0.004)
      local results, wall = job:wait(30)

      local p50, p90, p99 = appmod.percentile(pings, 50), appmod.percentile(pings, 90), appmod.percentile(pings, 99)
      local max = appmod.percentile(pings, 100)
      local c = sim:counters()
      -- Pings sent while at least one (and how many) delinks were in flight in the app.
      local covered, min_in_flight = 0, math.huge
      for i = 1, #pings do
        local n = 0
        for _, r in ipairs(results) do
          if r.json and r.json.t_start <= pings.starts[i] and r.json.t_end >= pings.ends[i] then n = n + 1 end
        end
        if n > 0 then covered = covered + 1 end
        if n < min_in_flight then min_in_flight = n end
      end
      say("1 worker, 16 threads, 20 delinks at 500 ms each: 200 pings p50 %.2f ms, p90 %.2f ms, p99 %.2f ms,"
        .. " max %.2f ms; delinks wall %.2f s; simulator in_flight_peak %d; every ping overlapped >= %d delinks",
        p50, p90, p99, max, wall, c.in_flight_peak, min_in_flight)

      assert.same({}, pings.errors)
      assert.is_true(p99 < 100, string.format("p99 %.1f ms", p99))
      for _, r in ipairs(results) do assert_delinked(r, 1) end
      assert.same({}, sim:relations("Products", RECORD, RELATED))
      assert.is_true(c.in_flight_peak >= 2, "in_flight_peak " .. c.in_flight_peak)
      assert.equal(200, covered, "pings sent while delinks were in flight")
      assert.is_true(wall < 3, string.format("20 delinks took %.2f s (serially: 10 s)", wall))
      assert.equal(1, c.token_grants)
      assert_clean_logs()
    end)

    it("queues calls past the worker's thread VMs (100) instead of failing them", function()
      start_app { workers = 1, threads = 16 }
      local ids = make_ids(150, 700)
      sim:seed("Products", RECORD, RELATED, ids)
      sim:config { latency_ms = 300 }
      local paths = {}
      for i, id in ipairs(ids) do paths[i] = appmod.delink_path("content", "Products", RECORD, RELATED, { id }) end
      for _, r in ipairs(app:parallel(paths, 150):wait(60)) do assert_delinked(r, 1) end
      assert.same({}, sim:relations("Products", RECORD, RELATED))
      assert_clean_logs()
    end)

    it("nor does the token grant: pings stay fast while the first refresh waits 1 s", function()
      start_app { workers = 1 }
      sim:seed("Products", RECORD, RELATED, make_ids(1))
      sim:config { latency_ms = 1000 }
      local job = app:parallel({ appmod.delink_path("content", "Products", RECORD, RELATED, make_ids(1)) }, 1)
      wait_for("the token request at the simulator", 5, function() return sim:counters().token_requests >= 1 end)
      local pings = app:pings(50, 0.01)
      local results = job:wait(30)
      local max = appmod.percentile(pings, 100)
      say("pings while the token POST is in flight: max %.2f ms", max)
      assert.same({}, pings.errors)
      assert.is_true(max < 250, string.format("max %.1f ms", max))
      assert_delinked(results[1], 1)
      assert.equal(1, sim:counters().token_grants)
      assert_clean_logs()
    end)
  end)

  describe("shares one token over 4 workers", function()
    -- 200 requests, one distinct seeded id each, all at once.
    local function stampede(first)
      local ids = make_ids(200, first)
      sim:seed("Products", RECORD, RELATED, ids)
      local paths = {}
      for i, id in ipairs(ids) do paths[i] = appmod.delink_path("content", "Products", RECORD, RELATED, { id }) end
      local results, wall = app:parallel(paths, 200):wait(60)
      local pids, npids = {}, 0
      for _, r in ipairs(results) do
        assert_delinked(r, 1)
        if not pids[r.json.pid] then pids[r.json.pid], npids = true, npids + 1 end
      end
      assert.same({}, sim:relations("Products", RECORD, RELATED))
      return wall, npids
    end

    local function warm_up()
      local status, warm = app:delink("content", "Products", RECORD, RELATED, { "1" })
      assert.equal(200, status)
      assert.equal("INVALID_DATA", warm.err, cjson.encode(warm))
      assert.equal(1, sim:counters().token_grants)
    end

    it("200 concurrent requests after Zoho expired the token: exactly one grant, all succeed", function()
      -- Clients made in init_worker_by_lua here (lazily in the other tests).
      start_app { workers = 4, lock_timeout = 2, client_in = "init_worker" }
      warm_up()
      sim:config { latency_ms = 100 }
      local before = sim:counters()
      assert.equal(1, sim:expire_tokens())
      local wall, npids = stampede(1000)
      local after = sim:counters()
      local rejected = 0
      for _, e in ipairs(sim:log()) do
        if e.status == 401 then rejected = rejected + 1 end
      end
      say("200 concurrent delinks over %d workers after expire_tokens: %d answered 401, %d new grant(s),"
        .. " wall %.2f s", npids, rejected, after.token_grants - before.token_grants, wall)
      assert.equal(1, after.token_grants - before.token_grants, "token grants")
      assert.equal(1, after.token_requests - before.token_requests, "token requests")
      assert.is_true(rejected >= 1, "some requests met the expired token")
      assert.equal(4, npids, "requests were served by every worker")
      assert_clean_logs()
    end)

    it("200 concurrent requests when the token nears expiry (60 s margin): exactly one grant", function()
      -- Tokens live 63 s: within the margin 3 s after the grant.
      sim:oauth_client { client_id = appmod.OAUTH.client_id, client_secret = appmod.OAUTH.client_secret,
                         refresh_token = appmod.OAUTH.refresh_token, expires_in = 63 }
      start_app { workers = 4, lock_timeout = 2 }
      warm_up()
      socket.sleep(3.2)
      local before = sim:counters()
      local wall, npids = stampede(2000)
      local after = sim:counters()
      say("200 concurrent delinks over %d workers after the token neared expiry: %d new grant(s), wall %.2f s",
        npids, after.token_grants - before.token_grants, wall)
      assert.equal(1, after.token_grants - before.token_grants, "token grants")
      assert.equal(200, after.requests - before.requests, "no request was rejected and retried")
      assert_clean_logs()
    end)
  end)

  describe("a refresh holder that dies does not block the others past lock_timeout", function()
    local LOCK_TIMEOUT, MARGIN = 2, 1

    -- The victim's request makes the first refresh (the callback misbehaves); once it
    -- is inside, 20 concurrent requests over 4 workers wait for the token.
    local function run(mode)
      start_app { workers = 4, refresh = mode, lock_timeout = LOCK_TIMEOUT, fail_delay = 0.5,
                  hang_seconds = 3 * LOCK_TIMEOUT }
      local victim_id = make_ids(1, 5000)
      local ids = make_ids(20, 6000)
      sim:seed("Products", RECORD, RELATED, victim_id)
      sim:seed("Products", RECORD, RELATED, ids)
      local victim = app:parallel({ appmod.delink_path("content", "Products", RECORD, RELATED, victim_id) }, 1)
      local st = wait_for("the first refresh to start", 5, function()
        local s = app:state()
        return s.first_refresh and s
      end)

      local paths = {}
      for i, id in ipairs(ids) do paths[i] = appmod.delink_path("content", "Products", RECORD, RELATED, { id }) end
      local results, wall = app:parallel(paths, 20):wait(30)
      local st_after = app:state()
      local c = sim:counters()
      local slowest = 0
      for _, r in ipairs(results) do
        assert_delinked(r, 1)
        if r.time > slowest then slowest = r.time end
      end
      say("%s: 20 concurrent delinks over 4 workers, lock_timeout %d s: the slowest took %.2f s (all: %.2f s);"
        .. " grants %d; refresh callback calls %d (real grants %d)", mode, LOCK_TIMEOUT, slowest,
        wall, c.token_grants, st_after.refresh_calls or 0, st_after.real_refresh_calls or 0)
      assert.is_true(slowest < LOCK_TIMEOUT + MARGIN,
        string.format("the slowest request took %.2f s (lock_timeout %d s)", slowest, LOCK_TIMEOUT))
      assert.equal(1, c.token_grants, "one waiter refreshed, the others used its token")
      assert.equal(1, st_after.real_refresh_calls, "one waiter refreshed itself")
      assert.is_number(st.first_refresh)
      return victim, results, st_after
    end

    it("when its refresh callback raises (fail_first): the lock is dropped at once", function()
      local victim, results, st = run("fail_first")
      -- The holder dropped its lock when its callback raised, long before the lock expired.
      assert.is_number(st.first_refresh_done)
      for _, r in ipairs(results) do
        assert.is_true(r.json.t_end < st.first_refresh + LOCK_TIMEOUT,
          string.format("a request ended %.2f s after the holder began", r.json.t_end - st.first_refresh))
      end
      local v = victim:wait(10)[1]
      say("fail_first: the holder's own request: HTTP %s, err %s: %s", tostring(v.status),
        tostring(v.json and v.json.err), tostring(v.json and v.json.message))
      assert.equal(200, v.status)
      assert.equal("TOKEN_REFRESH_FAILED", v.json.err)
      assert.matches("fail_first", v.json.message)
      assert.equal(1, #sim:relations("Products", RECORD, RELATED), "only the holder's id is left")
      assert.equal(1, sim:counters().token_grants)
      for _, line in ipairs(notable_lines(app)) do say("app log: %s", line) end
      assert_clean_logs()
    end)

    it("when its refresh callback hangs (hang_first): waiters take over after lock_timeout", function()
      local victim, results, st = run("hang_first")
      assert.is_nil(st.first_refresh_done, "the 20 finished while the holder still hung")
      -- They did wait for the hung holder's lock to expire: nobody had a token before.
      for _, r in ipairs(results) do
        assert.is_true(r.json.t_end >= st.first_refresh + LOCK_TIMEOUT - 0.1,
          string.format("a request ended %.2f s after the holder began", r.json.t_end - st.first_refresh))
      end
      -- The hung holder returns nothing after 6 s; it must not drop the lock of another
      -- or clobber the shared token: it adopts the token a waiter stored.
      local v = victim:wait(3 * LOCK_TIMEOUT + 10)[1]
      say("hang_first: the holder's own request: HTTP %s, %d id(s) delinked after %.1f s", tostring(v.status),
        v.json and v.json.succeeded or -1, v.json and (v.json.t_end - v.json.t_start) or -1)
      assert_delinked(v, 1, "the hung holder's request")
      local more = make_ids(8, 7000)
      sim:seed("Products", RECORD, RELATED, more)
      local paths = {}
      for i, id in ipairs(more) do paths[i] = appmod.delink_path("content", "Products", RECORD, RELATED, { id }) end
      for _, r in ipairs(app:parallel(paths, 8):wait(30)) do assert_delinked(r, 1) end
      assert.equal(1, sim:counters().token_grants, "no grant after the holder came back")
      assert.same({}, sim:relations("Products", RECORD, RELATED))
      for _, line in ipairs(notable_lines(app)) do say("app log: %s", line) end
      assert_clean_logs()
    end)
  end)
end)
