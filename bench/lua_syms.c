/* bench/profile.lua callgrind: a stand-in for /usr/bin/lua5.4 linked against Debian's
 * liblua5.4.a, which keeps function names (Debian's binary is stripped), so that the
 * profile names the interpreter's functions. Same library code; runs a script with arg[]. */
#include <stdio.h>
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    int i, rc;
    luaL_openlibs(L);
    lua_createtable(L, argc, 1);
    for (i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
    lua_setglobal(L, "arg");
    rc = luaL_dofile(L, argv[1]);
    if (rc != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); return 1; }
    lua_close(L);
    return 0;
}
