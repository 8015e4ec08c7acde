// A minimal persistent pool: the calling (JS) thread plus KF_THREADS-1 workers.
//
// A job is KF_THREADS tasks (fn(arg, t, KF_THREADS) for t = 0..KF_THREADS-1) that any thread may claim. The caller
// claims tasks too, and when it runs out it closes the job and waits only for tasks already started: on a busy
// machine (these are shared 2-vCPU hosts) a worker that has not been scheduled yet is simply not waited for.
// Workers spin briefly after each job (decode issues ~100 small kernels per token and a futex wake costs tens of
// microseconds), then sleep on a condition variable so that an idle worker does not compete with OpenBLAS's own
// threads for the second core.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kf.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define NWORK (KF_THREADS - 1)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; // held by the thread that owns the pool for one job
static atomic_uint job_gen;    // bumped for every job
static atomic_int job_open;    // 1 while tasks of the current job may still be claimed
static atomic_int job_active;  // workers inside the current job
static atomic_int next_task;
static atomic_int sleepers;
static kf_task_fn job_fn;
static void *job_arg;
static int started = 0, start_failed = 0;
static uint64_t spin_ns = 100000;
static int single = -1; // KFORCE_THREADS=1 runs everything on the calling thread (for measurements)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void run_tasks(void) {
  int t;
  while ((t = atomic_fetch_add(&next_task, 1)) < KF_THREADS) job_fn(job_arg, t, KF_THREADS);
}

static void *worker_main(void *p) {
  (void)p;
  unsigned seen = 0;
  for (;;) {
    unsigned g = atomic_load_explicit(&job_gen, memory_order_acquire);
    if (g == seen) {
      uint64_t t0 = now_ns();
      unsigned spins = 0;
      while ((g = atomic_load_explicit(&job_gen, memory_order_acquire)) == seen) {
        cpu_relax();
        if ((++spins & 127) == 0 && now_ns() - t0 > spin_ns) {
          pthread_mutex_lock(&mu);
          atomic_fetch_add(&sleepers, 1);
          while ((g = atomic_load(&job_gen)) == seen) pthread_cond_wait(&cv, &mu);
          atomic_fetch_sub(&sleepers, 1);
          pthread_mutex_unlock(&mu);
          break;
        }
      }
    }
    seen = g;
    // Join, then check the job is still open (seq_cst on both sides: either the caller sees us in job_active when
    // it closes, or we see the job closed and leave). job_fn/job_arg are stable while job_active > 0.
    atomic_fetch_add(&job_active, 1);
    if (atomic_load(&job_open)) run_tasks();
    atomic_fetch_sub(&job_active, 1);
  }
  return NULL;
}

static int ensure_started(void) {
  if (started) return 1;
  if (start_failed) return 0;
  const char *s = getenv("KFORCE_SPIN_US");
  if (s && *s) spin_ns = (uint64_t)strtoull(s, NULL, 10) * 1000ull;
  for (int i = 0; i < NWORK; i++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, worker_main, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      // Workers already created only ever join open jobs, so the pool stays correct; just run on the caller.
      start_failed = 1;
      return 0;
    }
  }
  started = 1;
  return 1;
}

void kf_parallel(kf_task_fn fn, void *arg, int want_threads) {
  if (single < 0) {
    const char *s = getenv("KFORCE_THREADS");
    single = s && strcmp(s, "1") == 0;
  }
  if (single || want_threads <= 1 || KF_THREADS <= 1 || pthread_mutex_trylock(&busy) != 0) {
    fn(arg, 0, 1);
    return;
  }
  if (!ensure_started()) {
    pthread_mutex_unlock(&busy);
    fn(arg, 0, 1);
    return;
  }
  job_fn = fn;
  job_arg = arg;
  atomic_store(&next_task, 0);
  atomic_store(&job_open, 1);
  atomic_fetch_add(&job_gen, 1);
  if (atomic_load(&sleepers) > 0) {
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  run_tasks();
  atomic_store(&job_open, 0);
  unsigned spins = 0;
  while (atomic_load(&job_active) > 0) {
    cpu_relax();
    if (++spins > 4096) sched_yield();
  }
  pthread_mutex_unlock(&busy);
}

kf_row_blocks kf_split_rows(size_t N, size_t row_bytes, size_t target_bytes, size_t align, size_t pieces) {
  kf_row_blocks s = {N, 0, 0, 0, 0};
  if (N == 0) return s;
  if (align < 1) align = 1;
  if (target_bytes < 1) target_bytes = 1;
  const size_t T = KF_THREADS;
  size_t rounds = (N * row_bytes + T * target_bytes - 1) / (T * target_bytes); // blocks per thread
  if (rounds < 1) rounds = 1;
  s.nb = (N + T * rounds - 1) / (T * rounds);
  s.nb = (s.nb + align - 1) / align * align;
  const size_t nblocks = (N + s.nb - 1) / s.nb;
  s.nfull = nblocks >= T ? nblocks - T : 0;
  s.nbs = (s.nb / (pieces > 1 ? pieces : 1) + align - 1) / align * align;
  if (s.nbs < align) s.nbs = align;
  s.nblocks = s.nfull + (N - s.nfull * s.nb + s.nbs - 1) / s.nbs;
  return s;
}

void kf_block_rows(const kf_row_blocks *s, size_t b, size_t *n0, size_t *n1) {
  *n0 = b < s->nfull ? b * s->nb : s->nfull * s->nb + (b - s->nfull) * s->nbs;
  const size_t len = b < s->nfull ? s->nb : s->nbs;
  *n1 = *n0 + len < s->N ? *n0 + len : s->N;
}
