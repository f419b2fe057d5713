build-x/watch.o: src/watch.c src/watch.h src/log.h
src/watch.h:
src/log.h:
