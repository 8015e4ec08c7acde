// Generic GEMM for backward passes: OpenBLAS when present, else a blocked portable loop on the pool.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kf.h"

#ifndef KF_NO_BLAS
#include <cblas.h>
#endif

static char blas_name[160];

void kf_blas_init(void) {
#ifndef KF_NO_BLAS
  // KFORCE_THREADS=1 (measurements) keeps OpenBLAS on one thread as well.
  const char *t = getenv("KFORCE_THREADS");
  openblas_set_num_threads(t && strcmp(t, "1") == 0 ? 1 : KF_THREADS);
  const char *cfg = openblas_get_config();
  // The config string starts with "OpenBLAS 0.3.21 ..." followed by build flags; keep name and version.
  char name[64] = "OpenBLAS", ver[32] = "";
  if (cfg) sscanf(cfg, "%63s %31s", name, ver);
  snprintf(blas_name, sizeof blas_name, "%s%s%s (%d threads)", name, ver[0] ? " " : "", ver,
           openblas_get_num_threads());
#else
  snprintf(blas_name, sizeof blas_name, "none (portable C)");
#endif
}

const char *kf_blas_name(void) { return blas_name; }

#ifdef KF_NO_BLAS
typedef struct {
  int transA, transB;
  size_t M, N, K;
  float alpha, beta;
  const float *a, *b;
  float *c;
} gemm_job;

// Each thread owns a contiguous band of C rows; inside it, k-outer loops over a B panel keep the inner loop a
// contiguous axpy over C's row (vectorisable) for the non-transposed-B case, and a dot product otherwise.
static void gemm_task(void *p, int tid, int nt) {
  gemm_job *j = p;
  size_t r0 = j->M * (size_t)tid / (size_t)nt, r1 = j->M * (size_t)(tid + 1) / (size_t)nt;
  const size_t M = j->M, N = j->N, K = j->K;
  for (size_t i = r0; i < r1; i++) {
    float *c = j->c + i * N;
    if (j->beta == 0.0f) memset(c, 0, N * sizeof(float));
    else if (j->beta != 1.0f) for (size_t n = 0; n < N; n++) c[n] *= j->beta;
    if (!j->transB) {
      for (size_t k = 0; k < K; k++) {
        float av = j->alpha * (j->transA ? j->a[k * M + i] : j->a[i * K + k]);
        const float *b = j->b + k * N;
        for (size_t n = 0; n < N; n++) c[n] += av * b[n];
      }
    } else {
      for (size_t n = 0; n < N; n++) {
        const float *b = j->b + n * K;
        float s = 0.0f;
        if (j->transA) for (size_t k = 0; k < K; k++) s += j->a[k * M + i] * b[k];
        else s = kf_dot16(j->a + i * K, b, K);
        c[n] += j->alpha * s;
      }
    }
  }
}
#endif

void kf_gemm(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *a, const float *b,
             float beta, float *c) {
  if (M == 0 || N == 0) return;
#ifndef KF_NO_BLAS
  if (K == 0) {
    // BLAS conventions say C = beta*C here; spell it out so beta == 0 also clears NaNs.
    for (size_t i = 0; i < M * N; i++) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, (int)M, (int)N,
              (int)K, alpha, a, transA ? (int)M : (int)K, b, transB ? (int)K : (int)N, beta, c, (int)N);
#else
  gemm_job j = {transA, transB, M, N, K, alpha, beta, a, b, c};
  kf_parallel(gemm_task, &j, (double)M * N * K > 1e5 && M > 1 ? KF_THREADS : 1);
#endif
}

// Reference for the benchmarks: what OpenBLAS alone does for a linear layer (gemv for one row, else sgemm).
int kf_blas_linear(float *out, const float *x, const float *w, size_t M, size_t K, size_t N) {
#ifndef KF_NO_BLAS
  if (M == 1)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, w, (int)K, x, 1, 0.0f, out, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K, w, (int)K, 0.0f,
                out, (int)N);
  return 1;
#else
  (void)out; (void)x; (void)w; (void)M; (void)K; (void)N;
  return 0;
#endif
}
