build-x/memmon.o: src/memmon.c src/memmon.h
src/memmon.h:
