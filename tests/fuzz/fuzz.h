/* fuzz.h - what every libFuzzer harness here shares: its two entry points, and CHECK, which
 * traps on a broken promise so libFuzzer keeps the input that broke it. Header-only. */
#ifndef IMGSPOOL_FUZZ_H
#define IMGSPOOL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                         \
	do {                                \
		if (!(cond))                \
			__builtin_trap();   \
	} while (0)

#endif
