build-x/breaker.o: src/breaker.c src/breaker.h
src/breaker.h:
