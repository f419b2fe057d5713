build-x/statusline.o: src/statusline.c src/statusline.h src/log.h
src/statusline.h:
src/log.h:
