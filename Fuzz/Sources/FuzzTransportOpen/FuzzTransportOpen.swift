// libFuzzer entry point of fuzz target `transportOpen` (see Sources/Fuzzing/FuzzTarget.swift).
import Fuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.transportOpen.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
