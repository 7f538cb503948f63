/* zcrm_compat.h - the few Lua 5.2/5.3 C API functions zcrm uses, for Lua 5.1 and
 * LuaJIT. Written against the 5.3 API; everything here is static and compiled only
 * below the version that has it, so the 5.4 build sees none of it. */
#ifndef ZCRM_COMPAT_H
#define ZCRM_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* LuaJIT 2.1 may already export some 5.2 functions; the zcrm_ prefix avoids clashes. */
static void zcrm_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, nup) zcrm_compat_setfuncs((L), (l), (nup))
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define luaL_newlibtable(L, l) lua_createtable((L), 0, (int)(sizeof(l) / sizeof((l)[0]) - 1))
#define luaL_newlib(L, l) (luaL_newlibtable((L), (l)), luaL_setfuncs((L), (l), 0))
#define luaL_setmetatable(L, name) (luaL_getmetatable((L), (name)), lua_setmetatable((L), -2))
#endif

#endif
