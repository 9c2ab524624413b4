# Filters `pip install --verbose` of llama-cpp-python down to what a person waits for:
# every 10th compile step of llama.cpp, the last one, and pip's closing line.
# Used by scripts/run and .ci/run.
/^ *\[[0-9]+\/[0-9]+\] / {
  split($1, step, /[][\/]/)
  if (step[2] % 10 == 0 || step[2] == step[3]) {
    printf "   compiling llama.cpp: %d of %d\n", step[2], step[3]; fflush()
  }
}
/^Successfully installed/ { print "   " $0; fflush() }
