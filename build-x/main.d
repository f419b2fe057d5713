build-x/main.o: src/main.c src/cmd.h src/config.h src/dispatch.h \
 src/log.h
src/cmd.h:
src/config.h:
src/dispatch.h:
src/log.h:
