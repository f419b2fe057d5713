build-x/nats.o: src/nats.c src/nats.h /usr/include/luajit-2.1/lua.h \
 /usr/include/luajit-2.1/luaconf.h /usr/include/luajit-2.1/lauxlib.h \
 /usr/include/luajit-2.1/lua.h src/backoff.h src/broker.h src/host.h \
 src/config.h src/store.h src/log.h
src/nats.h:
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
