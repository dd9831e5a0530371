// The one C header Swift sees for libpq; pkg-config adds its include path.
#include <libpq-fe.h>
