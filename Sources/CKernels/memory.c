#include "CKernels.h"
#if defined(__GLIBC__)
#include <malloc.h>
#include <stdlib.h>
#endif

void hone_configure_heap(void) {
#if defined(__GLIBC__)
    // A value the user set in the environment wins.
    if (getenv("MALLOC_ARENA_MAX") == NULL) mallopt(M_ARENA_MAX, 1);
    // 32 MiB is the largest mmap threshold glibc accepts on 64-bit systems.
    if (getenv("MALLOC_MMAP_THRESHOLD_") == NULL) mallopt(M_MMAP_THRESHOLD, 32 << 20);
    if (getenv("MALLOC_TRIM_THRESHOLD_") == NULL) mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

int hone_release_freed_memory(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

int hone_heap_usage(size_t *in_use, size_t *free_bytes) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 info = mallinfo2();
    *in_use = info.uordblks + info.hblkhd;
    *free_bytes = info.fordblks;
    return 1;
#else
    *in_use = 0;
    *free_bytes = 0;
    return 0;
#endif
}
