#pragma once
// The contract with the XDP programs (verdict indices, map and program names, sizes). Its
// single source is bpf/xdpwg_shared.h, which the BPF programs include too; this header only
// brings it into the CXDPWG module for Swift.
#include "../../../bpf/xdpwg_shared.h"
