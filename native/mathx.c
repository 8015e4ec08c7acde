// Portable reference versions of the fixed-order reductions (see kf.h). Written as 16 independent lane
// accumulators so that compilers vectorise them without reassociating anything.
#include <math.h>
#include "kf.h"

float kf_tree16(const float *acc) {
  float p[8], q[4], r[2];
  for (int i = 0; i < 8; i++) p[i] = acc[i] + acc[i + 8];
  for (int i = 0; i < 4; i++) q[i] = p[i] + p[i + 4];
  for (int i = 0; i < 2; i++) r[i] = q[i] + q[i + 2];
  return r[0] + r[1];
}

float kf_dot16(const float *a, const float *b, size_t n) {
  float acc[16] = {0};
  size_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; l++) acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
  // The masked AVX-512 tail multiplies zero-filled lanes: acc + 0*0, which leaves every finite acc unchanged
  // except -0 -> +0; do the same here.
  if (k < n)
    for (int l = 0; l < 16; l++) acc[l] = fmaf(k + l < n ? a[k + l] : 0.0f, k + l < n ? b[k + l] : 0.0f, acc[l]);
  return kf_tree16(acc);
}

float kf_expf(float x) { return expf(x); }
