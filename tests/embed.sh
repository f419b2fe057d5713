#!/bin/sh
# Turns lua/*.lua into a C table: { "name", source, length }. Used by the Makefile.
echo '#include <stddef.h>'
echo 'struct lua_embed { const char *name; const char *src; size_t len; };'
echo 'const struct lua_embed lua_embedded[] = {'
for f in "$@"; do
  name=$(basename "$f" .lua)
  printf '  { "%s", ' "$name"
  od -An -v -tx1 "$f" | tr -s ' \n' ' ' | sed -e 's/^ //' -e 's/ $//' -e 's/\([0-9a-f][0-9a-f]\)/\\x\1/g' -e 's/ //g' -e 's/^/"/' -e 's/$/"/'
  printf ', %s },\n' "$(wc -c < "$f")"
done
echo '  { NULL, NULL, 0 }'
echo '};'
