build-x/tests/test_store_sqlite: tests/unit/test_store_sqlite.c src/log.h \
 src/store.h
src/log.h:
src/store.h:
