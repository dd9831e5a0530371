// libFuzzer's driver, called from our own entry point: SwiftPM links every executable with
// `main` renamed to `<target>_main`, so libFuzzer's `main` cannot be the one that runs.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
