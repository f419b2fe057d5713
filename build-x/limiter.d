build-x/limiter.o: src/limiter.c src/limiter.h
src/limiter.h:
