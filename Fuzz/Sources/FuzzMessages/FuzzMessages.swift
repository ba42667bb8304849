// libFuzzer entry point of fuzz target `messages` (see Sources/Fuzzing/FuzzTarget.swift).
import Fuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.messages.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
