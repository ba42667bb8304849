// libFuzzer entry point of fuzz target `handshakeCookie` (see Sources/Fuzzing/FuzzTarget.swift).
import Fuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.handshakeCookie.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
