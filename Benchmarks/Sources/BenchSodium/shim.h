#pragma once
// libsodium, imported directly by the benchmarks for raw baselines (not through the core).
#include <sodium.h>
