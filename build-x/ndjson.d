build-x/ndjson.o: src/ndjson.c src/ndjson.h src/utf8.h
src/ndjson.h:
src/utf8.h:
