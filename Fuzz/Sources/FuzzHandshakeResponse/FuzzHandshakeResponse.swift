// libFuzzer entry point of fuzz target `handshakeResponse` (see Sources/Fuzzing/FuzzTarget.swift).
import Fuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTarget.handshakeResponse.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
