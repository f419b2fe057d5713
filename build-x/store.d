build-x/store.o: src/store.c src/store.h
src/store.h:
