// A small fork-join pool. One loop at a time (a mutex serializes callers). The caller
// publishes the loop's fields, bumps `generation` (release), takes indices itself, waits
// for every index to finish, and then for every worker to acknowledge the generation.
// Workers take part in every generation and acknowledge it when they leave, so no worker
// can still be reading a loop's fields when the next caller rewrites them.
#include "CKernels.h"
#include <pthread.h>
#include <stdatomic.h>

#define MAX_THREADS 64

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_once_t started = PTHREAD_ONCE_INIT;
static int thread_count = 1;
static int workers_started = 0;

static hone_task_fn job_fn;
static void *job_context;
static int job_count;
static atomic_int next_index;
static atomic_int remaining;
static atomic_uint generation;
static atomic_uint acknowledged[MAX_THREADS];

static inline void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

static void run_tasks(void) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&next_index, 1, memory_order_relaxed);
        if (i >= job_count) return;
        job_fn(job_context, i);
        atomic_fetch_sub_explicit(&remaining, 1, memory_order_release);
    }
}

static void *worker(void *arg) {
    int slot = (int)(intptr_t)arg;
    unsigned seen = 0;
    for (;;) {
        // Spin briefly for the next loop (decode issues them back to back), then sleep.
        unsigned now;
        int spins = 0;
        while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen && spins < 20000) {
            relax();
            spins++;
        }
        if (now == seen) {
            pthread_mutex_lock(&sleep_lock);
            while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&wake, &sleep_lock);
            pthread_mutex_unlock(&sleep_lock);
        }
        seen = now;
        run_tasks();
        atomic_store_explicit(&acknowledged[slot], seen, memory_order_release);
    }
    return NULL;
}

static void start_workers(void) {
    for (int t = 1; t < thread_count; t++) {
        pthread_t id;
        pthread_create(&id, NULL, worker, (void *)(intptr_t)t);
        pthread_detach(id);
    }
    workers_started = thread_count;
}

void hone_pool_set_threads(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (!workers_started) thread_count = threads;
}

void hone_parallel_for(int count, hone_task_fn fn, void *context) {
    if (count <= 0) return;
    if (thread_count == 1 || count == 1) {
        for (int i = 0; i < count; i++) fn(context, i);
        return;
    }
    pthread_once(&started, start_workers);
    pthread_mutex_lock(&call_lock);
    job_fn = fn;
    job_context = context;
    job_count = count;
    atomic_store_explicit(&next_index, 0, memory_order_relaxed);
    atomic_store_explicit(&remaining, count, memory_order_relaxed);
    pthread_mutex_lock(&sleep_lock);
    unsigned gen = atomic_fetch_add_explicit(&generation, 1, memory_order_acq_rel) + 1;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
    run_tasks();
    while (atomic_load_explicit(&remaining, memory_order_acquire) > 0) relax();
    for (int t = 1; t < workers_started; t++)
        while (atomic_load_explicit(&acknowledged[t], memory_order_acquire) != gen) relax();
    pthread_mutex_unlock(&call_lock);
}
