// libFuzzer entry point of fuzz target `uplinkFrame` (see Sources/Fuzzing/FuzzTarget.swift).
import Fuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.uplinkFrame.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
