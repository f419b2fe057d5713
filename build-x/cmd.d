build-x/cmd.o: src/cmd.c src/cmd.h src/ndjson.h src/store.h
src/cmd.h:
src/ndjson.h:
src/store.h:
