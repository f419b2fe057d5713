build-x/dispatch.o: src/dispatch.c src/dispatch.h src/config.h src/api.h \
 /usr/include/luajit-2.1/lua.h /usr/include/luajit-2.1/luaconf.h \
 src/backoff.h src/breaker.h src/broker.h src/host.h src/store.h \
 src/http.h src/limiter.h src/log.h src/memmon.h src/metrics.h \
 src/statusline.h src/watch.h src/watchdog.h
src/dispatch.h:
src/config.h:
src/api.h:
/usr/include/luajit-2.1/lua.h:
/usr/include/luajit-2.1/luaconf.h:
src/backoff.h:
src/breaker.h:
src/broker.h:
src/host.h:
src/store.h:
src/http.h:
src/limiter.h:
src/log.h:
src/memmon.h:
src/metrics.h:
src/statusline.h:
src/watch.h:
src/watchdog.h:
