-- Installation, at process level: the rockspec through `luarocks make`, and
-- `make install DESTDIR=`, each into a private temporary directory; then a fresh
-- lua5.4 started in / with LUA_PATH/LUA_CPATH pointing there must `require "zcrm"`.
-- Both build from a temporary copy of the tree (luarocks' builtin backend writes
-- csrc/*.o and zcrm/core.so into the directory it builds in), so the checkout is
-- never written to. Lua 5.4 only: the rockspec command is `luarocks --lua-version=5.4`.
--
--   make test SPECS=spec/06-install_spec.lua

if _VERSION ~= "Lua 5.4" or rawget(_G, "jit") then
    describe("installation", function()
        pending("runs under lua5.4 only (luarocks --lua-version=5.4 and lua5.4 children); this is "
                .. (rawget(_G, "jit") and jit.version or _VERSION))
    end)
    return
end

local ROCKSPEC = "rockspec/zcrm-scm-1.rockspec"

-- Children get neither the sanitizer preload of `make sanitize` (LuaRocks, make and
-- mktemp would run under ASan) nor the MAKEFLAGS of the `make test` this runs under
-- (its BUILD=, CFLAGS=, EXTRA_CFLAGS= would leak into the nested `make install`),
-- nor a caller's version-specific Lua paths, which lua5.4 prefers to LUA_PATH.
local CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LSAN_OPTIONS"
    .. " -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LUA_INIT -u LUA_INIT_5_4 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell script (stdout and stderr together) in the clean environment.
-- Returns the exit status, the output, and a description for failure messages.
local function sh(script)
    local p = assert(io.popen("exec " .. CLEAN_ENV .. "sh -c " .. q(script .. '\necho "__EXIT=$?"') .. " 2>&1", "r"))
    local all = p:read("*a")
    p:close()
    local out, code = all:match("^(.-)__EXIT=(%d+)%s*$")
    if not out then out, code = all, -1 end
    code = tonumber(code)
    return code, out, string.format("$ %s\n[exit status %d]\n%s", script, code, out)
end

-- Runs a script that must succeed; its output is the failure message otherwise.
local function must(script)
    local code, out, report = sh(script)
    assert(code == 0, "command failed:\n" .. report)
    return out, report
end

local function is_file(path)
    local f = io.open(path, "rb")
    if f then f:close() return true end
    return false
end

-- The repository root: this file is <root>/spec/06-install_spec.lua.
local ROOT = (function()
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    if src:sub(1, 1) ~= "/" then
        src = must("pwd"):gsub("%s+$", "") .. "/" .. src
    end
    src = src:gsub("/%./", "/")
    return assert(src:match("^(.*)/spec/[^/]*$"), "cannot find the repository root from " .. src)
end)()

-- Files of the checkout matching a shell glob relative to the root, sorted.
local function glob(pattern)
    local files = {}
    for line in must("cd " .. q(ROOT) .. " && for f in " .. pattern .. '; do [ -e "$f" ] && echo "$f"; done')
                :gmatch("[^\n]+") do
        files[#files + 1] = line
    end
    table.sort(files)
    return files
end

-- A private temporary directory, and a copy of the source tree in <tmp>/src
-- (without build outputs and VCS data).
local function temp_dir()
    local dir = must('mktemp -d "${TMPDIR:-/tmp}/zcrm-install-spec.XXXXXX"'):gsub("%s+$", "")
    assert(dir:match("/zcrm%-install%-spec%.[%w]+$"), "unexpected mktemp output: " .. dir)
    return dir
end

local function remove_dir(dir)
    if dir and dir:match("/zcrm%-install%-spec%.[%w]+$") then
        sh("rm -rf -- " .. q(dir))
    end
end

local function copy_tree(tmp)
    local src = tmp .. "/src"
    must("mkdir " .. q(src) .. " && tar -C " .. q(ROOT)
         .. " --exclude=./.git --exclude=./build --exclude=./luarocks-tree --exclude=./zcrm"
         .. " --exclude='*.o' --exclude='*.so' -cf - . | tar -C " .. q(src) .. " -xf -")
    return src
end

-- Starts lua5.4 in / with the given module paths (then the defaults, ";;"), requires
-- zcrm and reports what it loaded and from where, one key=value per line.
local PROBE = [[
local zcrm = require "zcrm"
local core = require "zcrm.core"
local plan = assert(core.plan("https://www.zohoapis.com", "v2.1", "Products", "1", "Price_Books", { "2", "3" }))
print("version=" .. tostring(zcrm._VERSION))
print("core_version=" .. tostring(core._VERSION))
print("zcrm_file=" .. tostring(package.searchpath("zcrm", package.path)))
print("core_file=" .. tostring(package.searchpath("zcrm.core", package.cpath)))
print("cjson_file=" .. tostring(package.searchpath("cjson", package.cpath)))
print("url=" .. plan.batches[1].url)
print("cwd=" .. io.popen("pwd"):read("*l"))
]]

local function probe(share, lib)
    local lua_path = share .. "/?.lua;" .. share .. "/?/init.lua;;"
    local lua_cpath = lib .. "/?.so;;"
    local out, report = must("cd / && LUA_PATH=" .. q(lua_path) .. " LUA_CPATH=" .. q(lua_cpath)
                             .. " lua5.4 -e " .. q(PROBE))
    local r = {}
    for k, v in out:gmatch("([%w_]+)=([^\n]*)") do r[k] = v end
    return r, report
end

-- What every installation must provide, checked against the files of the checkout.
local function assert_installed(share, lib, report)
    assert(is_file(lib .. "/zcrm/core.so"), "no " .. lib .. "/zcrm/core.so\n" .. report)
    for _, f in ipairs(glob("lua/zcrm/*.lua")) do
        local dest = share .. "/zcrm/" .. f:match("[^/]+$")
        assert(is_file(dest), "no " .. dest .. " (from " .. f .. ")\n" .. report)
    end
end

local function assert_loaded(r, share, lib, report)
    local core = require "zcrm.core" -- the core of this checkout, as the other specs load it
    local where = "\n" .. report
    assert(r.version and r.version ~= "" and r.version ~= "nil", "zcrm._VERSION missing" .. where)
    assert.equal(r.core_version, r.version, "zcrm._VERSION is not the C core's version" .. where)
    assert.equal(core._VERSION, r.core_version, "installed core's version differs from the checkout's" .. where)
    assert.equal(share .. "/zcrm/init.lua", r.zcrm_file, "zcrm not loaded from the install" .. where)
    assert.equal(lib .. "/zcrm/core.so", r.core_file, "zcrm.core not loaded from the install" .. where)
    assert.equal("https://www.zohoapis.com/crm/v2.1/Products/1/Price_Books?ids=2,3", r.url, where)
    assert.equal("/", r.cwd, where)
end

describe("installation", function()
    it("the rockspec lists every csrc/*.c, lua/zcrm/*.lua and lua/zcrm/*/*.lua", function()
        local spec = {}
        local chunk = assert(loadfile(ROOT .. "/" .. ROCKSPEC, "t", spec))
        chunk()
        assert.equal("zcrm", spec.package)
        assert.equal("scm-1", spec.version)
        local modules = spec.build.modules
        local sources = {}
        for _, s in ipairs(modules["zcrm.core"].sources) do sources[#sources + 1] = s end
        table.sort(sources)
        assert.same(glob("csrc/*.c"), sources, ROCKSPEC .. ": zcrm.core's sources should be every csrc/*.c")

        local expected = { ["zcrm.core"] = true }
        for _, f in ipairs(glob("lua/zcrm/*.lua lua/zcrm/*/*.lua")) do
            local name = f:match("^lua/zcrm/(.+)%.lua$"):gsub("/", ".")
            local mod = name == "init" and "zcrm" or "zcrm." .. name
            assert.equal(f, modules[mod], ROCKSPEC .. ": build.modules[\"" .. mod .. "\"] should be \"" .. f .. "\"")
            expected[mod] = true
        end
        for mod in pairs(modules) do
            assert.is_true(expected[mod] or false, ROCKSPEC .. ": build.modules[\"" .. mod .. "\"] has no file in the checkout")
        end
    end)

    it("luarocks make installs a tree from which lua5.4 in / requires zcrm", function()
        local tmp = temp_dir()
        finally(function() remove_dir(tmp) end)
        local src = copy_tree(tmp)
        local tree = tmp .. "/tree"
        local _, report = must("cd " .. q(src) .. " && luarocks --lua-version=5.4 make --deps-mode=none --tree="
                               .. q(tree) .. " " .. ROCKSPEC)
        local share, lib = tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4"
        assert_installed(share, lib, report)
        local r, probe_report = probe(share, lib)
        assert_loaded(r, share, lib, report .. "\n" .. probe_report)
    end)

    it("make install DESTDIR= installs files from which lua5.4 in / requires zcrm", function()
        local tmp = temp_dir()
        finally(function() remove_dir(tmp) end)
        local src = copy_tree(tmp)
        local dest = tmp .. "/dest"
        local _, report = must("cd " .. q(src) .. " && make install DESTDIR=" .. q(dest) .. " PREFIX=/usr/local")
        local share, lib = dest .. "/usr/local/share/lua/5.4", dest .. "/usr/local/lib/lua/5.4"
        assert_installed(share, lib, report)
        local r, probe_report = probe(share, lib)
        assert_loaded(r, share, lib, report .. "\n" .. probe_report)
    end)
end)
