build-x/lua_embed.o: build-x/lua_embed.c
