build-x/store_sqlite.o: src/store_sqlite.c src/idset.h src/store.h \
 src/log.h
src/idset.h:
src/store.h:
src/log.h:
