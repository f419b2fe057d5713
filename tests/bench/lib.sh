# Sourced by the benchmarks (first thing, before they change folder).

# median: the median of the numbers on stdin, one per line (the lower middle of an
# even count).
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
