build-x/store_ndjson.o: src/store_ndjson.c src/log.h src/ndjson.h \
 src/store.h
src/log.h:
src/ndjson.h:
src/store.h:
