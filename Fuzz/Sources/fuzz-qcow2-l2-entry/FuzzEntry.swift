import FuzzDriver
import FuzzEntryPoints

/// libFuzzer's entry point for the qcow2-l2-entry target (see Sources/FuzzEntryPoints).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzTarget.qcow2L2Entry.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// What SwiftPM links as main for this executable.
@_cdecl("fuzz_qcow2_l2_entry_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    spindle_fuzz_main(argc, argv)
}
