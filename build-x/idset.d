build-x/idset.o: src/idset.c src/idset.h
src/idset.h:
