#!/bin/sh
# Builds build/kbench (static OpenBLAS, so the binary runs on hosts without it). MARCH=znver4 for another host.
set -e
cd "$(dirname "$0")/../.."
mkdir -p build
gcc -O3 -march=${MARCH:-native} -ffp-contract=off -fno-math-errno -std=gnu11 $(pkg-config --cflags openblas) \
  -o build/kbench native/bench/kbench.c native/pool.c native/mathx.c native/linear.c native/gemm.c native/norm.c \
  native/rope.c native/attention.c native/loss.c \
  -Wl,-Bstatic $(pkg-config --variable=libdir openblas)/libopenblas.a -Wl,-Bdynamic -lm -lpthread
