build-x/log.o: src/log.c src/log.h src/utf8.h
src/log.h:
src/utf8.h:
