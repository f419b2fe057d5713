build-x/watchdog.o: src/watchdog.c src/watchdog.h
src/watchdog.h:
