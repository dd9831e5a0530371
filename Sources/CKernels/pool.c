// Fork-join pools. Each pool runs one loop at a time (a mutex serializes its callers). The
// caller publishes the loop's fields, bumps `generation` (release), takes indices itself,
// waits for every index to finish, and then for every worker to acknowledge the generation.
// Workers take part in every generation and acknowledge it when they leave, so no worker
// can still be reading a loop's fields when the next caller rewrites them.
//
// There is one pool per class of work (ComputeScheduler in Tensor): the default pool at
// normal priority for serving, and pools whose workers run at a higher nice value for
// learning. Each thread's loops go to the pool it is bound to. The two classes never wait
// for each other's loops; the kernel's scheduler gives the cores to serving first and
// still gives learning a share fixed by its weight (see hone_pool_create).
#define _GNU_SOURCE
#include "CKernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 64
#define SPINS 2000

struct hone_pool {
    pthread_mutex_t call_lock;
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    int thread_count;
    int nice;

    hone_task_fn job_fn;
    void *job_context;
    int job_count;
    atomic_int next_index;
    atomic_int remaining;
    atomic_uint generation;
    atomic_uint acknowledged[MAX_THREADS];
    /// Kernel thread ids of the workers (slot 0, the caller's, stays 0).
    atomic_int tids[MAX_THREADS];
};

typedef struct {
    hone_pool *pool;
    int slot;
} worker_start;

static inline void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

int hone_thread_id(void) { return (int)syscall(SYS_gettid); }

int hone_thread_set_nice(int nice) { return setpriority(PRIO_PROCESS, (id_t)hone_thread_id(), nice); }

int hone_thread_nice(int tid) { return getpriority(PRIO_PROCESS, (id_t)tid); }

// One round of a caller's wait for the pool's workers: a pause while the wait is short, as
// it nearly always is; past SPINS rounds the caller yields its core instead, since then the
// worker it waits for is likely off its core, with more threads wanting the cores than there
// are (a held-out check decoding beside a training step, learning beside serving).
static inline void wait_round(int *rounds) {
    if (++*rounds < SPINS) relax();
    else sched_yield();
}

static void run_tasks(hone_pool *p) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&p->next_index, 1, memory_order_relaxed);
        if (i >= p->job_count) return;
        p->job_fn(p->job_context, i);
        atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_release);
    }
}

static void *worker(void *arg) {
    worker_start start = *(worker_start *)arg;
    free(arg);
    hone_pool *p = start.pool;
    // On Linux the nice value belongs to the thread, not the process.
    if (p->nice != 0) hone_thread_set_nice(p->nice);
    atomic_store_explicit(&p->tids[start.slot], hone_thread_id(), memory_order_release);
    unsigned seen = 0;
    for (;;) {
        // Spin briefly for the next loop (a forward pass issues them back to back), then
        // sleep. Briefly: a spinning worker holds its core, and between decode steps that
        // time is learning's (20000 spins, ~1.3 ms on Sapphire Rapids, kept the serving
        // pool's worker on its core through whole streams).
        unsigned now;
        int spins = 0;
        while ((now = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen && spins < SPINS) {
            relax();
            spins++;
        }
        if (now == seen) {
            pthread_mutex_lock(&p->sleep_lock);
            while ((now = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->sleep_lock);
            pthread_mutex_unlock(&p->sleep_lock);
        }
        seen = now;
        run_tasks(p);
        atomic_store_explicit(&p->acknowledged[start.slot], seen, memory_order_release);
    }
    return NULL;
}

hone_pool *hone_pool_create(int threads, int nice) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    hone_pool *p = calloc(1, sizeof *p);
    pthread_mutex_init(&p->call_lock, NULL);
    pthread_mutex_init(&p->sleep_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->thread_count = threads;
    p->nice = nice;
    for (int t = 1; t < threads; t++) {
        worker_start *start = malloc(sizeof *start);
        *start = (worker_start){p, t};
        pthread_t id;
        pthread_create(&id, NULL, worker, start);
        pthread_detach(id);
    }
    return p;
}

int hone_pool_threads(const hone_pool *pool) { return pool->thread_count; }

int hone_pool_worker_ids(hone_pool *pool, int *ids, int capacity) {
    int n = 0;
    for (int t = 1; t < pool->thread_count && n < capacity; t++) {
        int tid = atomic_load_explicit(&pool->tids[t], memory_order_acquire);
        if (tid != 0) ids[n++] = tid;
    }
    return n;
}

// ---- The default pool and each thread's binding.

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int default_threads = 1;
static hone_pool *default_pool;
static _Thread_local hone_pool *bound_pool;

static void create_default(void) { default_pool = hone_pool_create(default_threads, 0); }

void hone_pool_set_threads(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (!default_pool) default_threads = threads;
}

hone_pool *hone_pool_default(void) {
    pthread_once(&default_once, create_default);
    return default_pool;
}

void hone_pool_bind(hone_pool *pool) { bound_pool = pool; }

hone_pool *hone_pool_bound(void) { return bound_pool ? bound_pool : hone_pool_default(); }

void hone_parallel_for(int count, hone_task_fn fn, void *context) {
    if (count <= 0) return;
    hone_pool *p = hone_pool_bound();
    if (p->thread_count == 1 || count == 1) {
        for (int i = 0; i < count; i++) fn(context, i);
        return;
    }
    pthread_mutex_lock(&p->call_lock);
    p->job_fn = fn;
    p->job_context = context;
    p->job_count = count;
    atomic_store_explicit(&p->next_index, 0, memory_order_relaxed);
    atomic_store_explicit(&p->remaining, count, memory_order_relaxed);
    pthread_mutex_lock(&p->sleep_lock);
    unsigned gen = atomic_fetch_add_explicit(&p->generation, 1, memory_order_acq_rel) + 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->sleep_lock);
    run_tasks(p);
    int rounds = 0;
    while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0) wait_round(&rounds);
    for (int t = 1; t < p->thread_count; t++)
        while (atomic_load_explicit(&p->acknowledged[t], memory_order_acquire) != gen) wait_round(&rounds);
    pthread_mutex_unlock(&p->call_lock);
}
