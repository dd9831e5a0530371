// Kernel levels: what this CPU runs (detected once) and the level in use (HONE_KERNELS,
// or hone_kernels_use in tests). Every kernel file asks hone_kernels_level().
#include "CKernels.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#define HONE_X86 1
#endif

static int cpu_level = 0;
static _Atomic int active_level = 0;
static pthread_once_t levels_once = PTHREAD_ONCE_INIT;

static const char *level_names[] = {"reference", "avx2", "avx512"};

// What the CPU can run, then the level in use: HONE_KERNELS when set (a lower level for
// tests and benchmarks), else the highest. Asking for a level the CPU lacks, or a name
// that is no level, stops the process at its first kernel call with the reason: running
// another level than the one asked for would make every figure and test result a lie.
static void detect_levels(void) {
#ifdef HONE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) cpu_level = 1;
    if (cpu_level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("bmi2")) cpu_level = 2;
#endif
    int level = cpu_level;
    const char *asked = getenv("HONE_KERNELS");
    if (asked && *asked) {
        level = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(asked, level_names[i]) == 0) level = i;
        if (level < 0 || level > cpu_level) {
            fprintf(stderr, "hone: HONE_KERNELS=%s %s; this CPU runs: %s\n", asked,
                    level < 0 ? "is not a kernel level (reference, avx2, avx512)" : "asks for instructions this CPU lacks",
                    cpu_level == 2 ? "reference, avx2, avx512" : cpu_level == 1 ? "reference, avx2" : "reference");
            exit(2);
        }
    }
    active_level = level;
}

int hone_cpu_level(void) {
    pthread_once(&levels_once, detect_levels);
    return cpu_level;
}

int hone_kernels_level(void) {
    pthread_once(&levels_once, detect_levels);
    return active_level;
}

const char *hone_kernels_level_name(int level) {
    return level >= 0 && level <= 2 ? level_names[level] : "unknown";
}

int hone_kernels_use(int level) {
    int previous = hone_kernels_level();
    if (level < 0 || level > cpu_level) return -1;
    active_level = level;
    return previous;
}

