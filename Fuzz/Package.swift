// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for Spindle's hostile-input parsers. Kept out of the main package so its
// build and CI never see fuzzer flags. Build and run with `Fuzz/run.sh` (see Fuzz/README.md):
//   swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address \
//       -Xswiftc -parse-as-library -Xswiftc -enable-testing
// Each target exports LLVMFuzzerTestOneInput and a <module>_main that starts libFuzzer's driver.
let gnuSource: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-D_GNU_SOURCE"])]

func fuzzTarget(_ name: String) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzDriver", .product(name: "SpindleFuzzEntryPoints", package: "spindle")],
                      swiftSettings: gnuSource)
}

let package = Package(
    name: "spindle-fuzz",
    dependencies: [.package(name: "spindle", path: "..")],
    targets: [
        // Calls libFuzzer's driver from the "<module>_main" SwiftPM makes main point to.
        .target(name: "FuzzDriver"),
        fuzzTarget("fuzz-vhost-user-message"),
        fuzzTarget("fuzz-guest-memory"),
        fuzzTarget("fuzz-descriptor-chain"),
        fuzzTarget("fuzz-packed-descriptor-chain"),
        fuzzTarget("fuzz-virtio-blk-request"),
        fuzzTarget("fuzz-qmp"),
        fuzzTarget("fuzz-command-line"),
        fuzzTarget("fuzz-qcow2-header"),
        fuzzTarget("fuzz-qcow2-l2-entry"),
    ],
    swiftLanguageModes: [.v6]
)
