// A minimal persistent pool: the calling (JS) thread plus KF_THREADS-1 workers. Workers spin briefly after each job
// (decode issues ~100 small kernels per token, and a futex wake costs tens of microseconds) and then sleep on a
// condition variable, so that an idle worker does not compete with OpenBLAS's own threads on a 2-core machine.
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
static atomic_uint job_gen;
static atomic_uint done_count;
static atomic_int sleepers;
static kf_task_fn job_fn;
static void *job_arg;
static int started = 0, start_failed = 0;
static int single = -1; // KFORCE_THREADS=1 runs everything on the calling thread (for measurements)
static uint64_t spin_ns = 100000;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *p) {
  int tid = (int)(intptr_t)p;
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
    job_fn(job_arg, tid, KF_THREADS);
    atomic_fetch_add_explicit(&done_count, 1, memory_order_release);
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
    int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(i + 1));
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      // Workers already created stay idle forever; the pool then runs everything on the calling thread.
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
  atomic_store(&done_count, 0);
  atomic_fetch_add(&job_gen, 1); // seq_cst: pairs with the sleepers/job_gen checks in worker_main
  if (atomic_load(&sleepers) > 0) {
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  fn(arg, 0, KF_THREADS);
  unsigned spins = 0;
  while (atomic_load_explicit(&done_count, memory_order_acquire) != NWORK) {
    cpu_relax();
    if (++spins > (1u << 20)) sched_yield();
  }
  pthread_mutex_unlock(&busy);
}
