build-x/http.o: src/http.c /usr/include/luajit-2.1/lauxlib.h \
 /usr/include/luajit-2.1/lua.h /usr/include/luajit-2.1/luaconf.h \
 src/host.h /usr/include/luajit-2.1/lua.h src/config.h src/store.h \
 src/http.h
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/host.h:
/usr/include/luajit-2.1/lua.h:
src/config.h:
src/store.h:
src/http.h:
