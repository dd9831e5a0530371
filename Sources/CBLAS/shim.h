// OpenBLAS's CBLAS interface; pkg-config openblas adds its include path.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
