import FuzzDriver
import FuzzEntryPoints

/// libFuzzer's entry point for the guest-memory target (see Sources/FuzzEntryPoints).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzTarget.guestMemory.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// What SwiftPM links as main for this executable.
@_cdecl("fuzz_guest_memory_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    spindle_fuzz_main(argc, argv)
}
