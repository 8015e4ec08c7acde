// Session 15 check that the vertical path (vertical-linear.patch) gives the dot-form bits: rows 9-64, five shapes,
// bias on/off, plain and GELU-fused. After applying the patch, from the repository root:
//   gcc -O2 -march=native -ffp-contract=off -std=gnu11 -o /tmp/vcheck docs/experiments/vertical-check.c native/pool.c \
//     native/mathx.c native/linear.c native/norm.c -lm -lpthread && /tmp/vcheck
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../native/kf.h"
static float *fill(size_t n, unsigned s) { float *p = aligned_alloc(64, (n * 4 + 63) / 64 * 64); for (size_t i = 0; i < n; i++) { s = s * 1103515245u + 12345u; p[i] = ((s >> 8) & 0xffff) / 32768.0f - 1.0f; } return p; }
int main(void) {
  size_t shapes[][2] = {{768, 2304}, {3072, 768}, {768, 50258 % 1000 + 24}, {64, 37}, {1536, 768}};
  int bad = 0;
  for (int si = 0; si < 5; si++) for (size_t M = 9; M <= 64; M += (M < 20 ? 1 : 7)) for (int bi = 0; bi < 2; bi++) {
    size_t K = shapes[si][0], N = shapes[si][1];
    float *x = fill(M * K, 1 + M), *w = fill(N * K, 2 + si), *b = bi ? fill(N, 3) : NULL;
    float *o1 = malloc(M * N * 4), *o2 = malloc(M * N * 4);
    kf_linear_knob("vert", 0); kf_linear(o1, x, w, b, M, K, N);
    kf_linear_knob("vert", 1); kf_linear(o2, x, w, b, M, K, N);
    if (memcmp(o1, o2, M * N * 4)) { size_t i = 0; while (o1[i] == o2[i]) i++; printf("MISMATCH K=%zu N=%zu M=%zu bias=%d at %zu: %.9g %.9g\n", K, N, M, bi, i, o1[i], o2[i]); bad++; }
    kf_linear_knob("vert", 1); kf_linear_act(o2, x, w, b, M, K, N, KF_ACT_GELU_TANH);
    kf_linear_knob("vert", 0); kf_linear_act(o1, x, w, b, M, K, N, KF_ACT_GELU_TANH);
    if (memcmp(o1, o2, M * N * 4)) { printf("MISMATCH act K=%zu N=%zu M=%zu\n", K, N, M); bad++; }
    free(x); free(w); free(b); free(o1); free(o2);
  }
  printf("%s\n", bad ? "FAIL" : "all equal");
  return bad != 0;
}
