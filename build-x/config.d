build-x/config.o: src/config.c src/config.h src/backoff.h src/log.h \
 src/memmon.h
src/config.h:
src/backoff.h:
src/log.h:
src/memmon.h:
