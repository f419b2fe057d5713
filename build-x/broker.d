build-x/broker.o: src/broker.c src/broker.h /usr/include/luajit-2.1/lua.h \
 /usr/include/luajit-2.1/luaconf.h src/host.h src/config.h src/store.h \
 /usr/include/luajit-2.1/lauxlib.h /usr/include/luajit-2.1/lua.h
src/broker.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/host.h:
src/config.h:
src/store.h:
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
