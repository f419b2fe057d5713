build-x/api_time.o: src/api_time.c /usr/include/luajit-2.1/lauxlib.h \
 /usr/include/luajit-2.1/lua.h /usr/include/luajit-2.1/luaconf.h \
 src/api.h /usr/include/luajit-2.1/lua.h src/host.h src/config.h \
 src/store.h
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/api.h:
/usr/include/luajit-2.1/lua.h:
src/host.h:
src/config.h:
src/store.h:
