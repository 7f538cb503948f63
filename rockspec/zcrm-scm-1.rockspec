-- zcrm: Zoho CRM's Delink Related Records from Lua (a C core on libcurl).
--
--   luarocks --lua-version=5.4 make --deps-mode=none rockspec/zcrm-scm-1.rockspec
--
-- builds and installs the working tree (`luarocks make` never fetches `source`).
-- Keep build.modules in sync with csrc/*.c and lua/zcrm/*.lua: the Makefile
-- globs them, this file lists them.

package = "zcrm"
version = "scm-1"

source = {
   url = "git+https://example.invalid/zcrm.git",
}

description = {
   summary = "Zoho CRM Delink Related Records client: a Lua module with a C core on libcurl",
   detailed = [[
zcrm delinks related records in Zoho CRM (DELETE .../{module}/{record}/{related_list}),
up to 100 ids per call, with the batching, URL building and HTTP done in C on
libcurl and a Lua API on top (clients, default client from the environment,
OAuth refresh-token grant, per-id results).
]],
   -- No `license`: the project does not declare one yet; add it here when it does.
}

dependencies = {
   "lua >= 5.1",
   "lua-cjson",
}

-- LuaRocks probes <prefix>/include for headers, with prefix in external_deps_dirs
-- (/usr/local, /usr, /). Debian and Ubuntu install curl.h in the multiarch
-- directory /usr/include/<triplet>/curl/, which LuaRocks 3.8 never looks at
-- (external_deps_subdirs.include is just "include"), so a `header` check fails there
-- although the compiler finds <curl/curl.h> on its own (gcc and clang search the
-- multiarch directory by default). On Linux only the library is probed
-- (lib/x86_64-linux-gnu is in external_deps_subdirs.lib); CURL_INCDIR is then
-- <prefix>/include, harmless on the command line. Elsewhere curl.h is in
-- <prefix>/include/curl and is checked, so a missing development package is
-- reported before compiling. CURL_DIR / CURL_INCDIR / CURL_LIBDIR on the luarocks
-- command line still override everything.
external_dependencies = {
   CURL = {
      library = "curl",
   },
   platforms = {
      bsd = { CURL = { header = "curl/curl.h" } },      -- macOS, FreeBSD, OpenBSD, NetBSD
      solaris = { CURL = { header = "curl/curl.h" } },
      windows = { CURL = { header = "curl/curl.h" } },
   },
}

build = {
   type = "builtin",
   modules = {
      -- The C core. LuaRocks compiles with its own CFLAGS (-O2 -fPIC), without the
      -- Makefile's -std=c99 -fvisibility=hidden -Werror: the sources are C99 that
      -- gcc's and clang's default dialects (gnu11/gnu17) accept, and the only
      -- difference without -fvisibility=hidden is that the zcrm_* functions are
      -- exported next to luaopen_zcrm_core.
      ["zcrm.core"] = {
         sources = {
            "csrc/zcrm_batch.c",
            "csrc/zcrm_error.c",
            "csrc/zcrm_http_curl.c",
            "csrc/zcrm_json.c",
            "csrc/zcrm_lua.c",
            "csrc/zcrm_reply.c",
            "csrc/zcrm_signal.c",
            "csrc/zcrm_url.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "$(CURL_INCDIR)" },
         libdirs = { "$(CURL_LIBDIR)" },
         libraries = { "curl" },
      },
      ["zcrm"] = "lua/zcrm/init.lua",
      ["zcrm.cli"] = "lua/zcrm/cli.lua",
      ["zcrm.cli.input"] = "lua/zcrm/cli/input.lua",
      ["zcrm.cli.journal"] = "lua/zcrm/cli/journal.lua",
      ["zcrm.cli.report"] = "lua/zcrm/cli/report.lua",
      ["zcrm.client"] = "lua/zcrm/client.lua",
      ["zcrm.dc"] = "lua/zcrm/dc.lua",
      ["zcrm.errors"] = "lua/zcrm/errors.lua",
      ["zcrm.oauth"] = "lua/zcrm/oauth.lua",
      ["zcrm.options"] = "lua/zcrm/options.lua",
      ["zcrm.retry"] = "lua/zcrm/retry.lua",
      ["zcrm.response"] = "lua/zcrm/response.lua",
      ["zcrm.thread"] = "lua/zcrm/thread.lua",
      ["zcrm.token"] = "lua/zcrm/token.lua",
      ["zcrm.transport"] = "lua/zcrm/transport.lua",
   },
   -- The command line tool: LuaRocks puts it in the tree's bin/ behind a wrapper that
   -- runs it with this Lua (lua5.4 for --lua-version=5.4) and luarocks.loader.
   install = {
      bin = {
         zcrm = "bin/zcrm",
      },
   },
}
