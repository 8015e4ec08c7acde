#!/bin/sh
# Builds build/kbench, or the path given (static OpenBLAS, so the binary runs on hosts without it; node-gyp rebuild
# clears build/). MARCH=x86-64-v4 for another AVX-512 host.
set -e
cd "$(dirname "$0")/../.."
OUT=${1:-build/kbench}
mkdir -p "$(dirname "$OUT")"
gcc -O3 -march=${MARCH:-native} -ffp-contract=off -fno-math-errno -std=gnu11 $(pkg-config --cflags openblas) \
  -o "$OUT" native/bench/kbench.c native/pool.c native/mathx.c native/linear.c native/gemm.c native/norm.c \
  native/rope.c native/attention.c native/loss.c native/screen.c native/sample.c \
  -Wl,-Bstatic $(pkg-config --variable=libdir openblas)/libopenblas.a -Wl,-Bdynamic -lm -lpthread
