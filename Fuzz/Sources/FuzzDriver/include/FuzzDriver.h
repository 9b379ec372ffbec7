#include <stdint.h>
#include <stddef.h>

/// Starts libFuzzer on this executable's LLVMFuzzerTestOneInput. SwiftPM links executables
/// with main aliased to "<module>_main", so each target's Swift entry calls this instead of
/// relying on libFuzzer's own main.
int spindle_fuzz_main(int argc, char **argv);
