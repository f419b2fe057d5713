build-x/metrics.o: src/metrics.c src/metrics.h src/log.h
src/metrics.h:
src/log.h:
