build-x/api_core.o: src/api_core.c /usr/include/luajit-2.1/lauxlib.h \
 /usr/include/luajit-2.1/lua.h /usr/include/luajit-2.1/luaconf.h \
 src/api.h /usr/include/luajit-2.1/lua.h src/host.h src/config.h \
 src/store.h src/http.h src/log.h src/nats.h src/redis.h
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/api.h:
/usr/include/luajit-2.1/lua.h:
src/host.h:
src/config.h:
src/store.h:
src/http.h:
src/log.h:
src/nats.h:
src/redis.h:
