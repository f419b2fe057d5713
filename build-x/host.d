build-x/host.o: src/host.c src/host.h /usr/include/luajit-2.1/lua.h \
 /usr/include/luajit-2.1/luaconf.h src/config.h src/store.h \
 /usr/include/luajit-2.1/lauxlib.h /usr/include/luajit-2.1/lua.h \
 /usr/include/luajit-2.1/luajit.h /usr/include/luajit-2.1/lualib.h \
 src/api.h src/log.h src/watchdog.h
src/host.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/config.h:
src/store.h:
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luajit.h:
/usr/include/luajit-2.1/lualib.h:
src/api.h:
src/log.h:
src/watchdog.h:
