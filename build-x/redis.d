build-x/redis.o: src/redis.c src/redis.h /usr/include/luajit-2.1/lua.h \
 /usr/include/luajit-2.1/luaconf.h /usr/include/luajit-2.1/lauxlib.h \
 /usr/include/luajit-2.1/lua.h src/backoff.h src/broker.h src/host.h \
 src/config.h src/store.h src/log.h
src/redis.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
/usr/include/luajit-2.1/lauxlib.h:
/usr/include/luajit-2.1/lua.h:
src/backoff.h:
src/broker.h:
src/host.h:
src/config.h:
src/store.h:
src/log.h:
