// swift-tools-version:6.0
import PackageDescription

// liburing.h defines _GNU_SOURCE; Glibc's module is built without it, so every Swift
// target that sees CSpindle must be compiled with it too (see README, "Build notes").
let gnuSource: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-D_GNU_SOURCE"])]
// The data path's modules skip the *runtime* exclusivity checks in release builds: they cost
// ~40 % of an IOThread's instructions per request (swift_beginAccess on every mutating
// access to a class's stored property; bench/results/callgrind-hot-path.md). The compiler's
// static checks still apply, and debug builds (the tests) keep the runtime checks.
let hotPath: [SwiftSetting] = gnuSource + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
let log: Target.Dependency = .product(name: "Logging", package: "swift-log")

let package = Package(
    name: "spindle",
    products: [
        .executable(name: "spindle", targets: ["spindle"]),
        .executable(name: "spindle-bench", targets: ["spindle-bench"]),
        // For the libFuzzer package under Fuzz/ (kept separate so fuzzer flags stay out of here).
        .library(name: "SpindleFuzzEntryPoints", targets: ["FuzzEntryPoints"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // The Prometheus metrics endpoint only (MetricsEndpoint): its HTTP server and text format.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C glue: liburing, libnuma and the macros Swift cannot import.
        .target(name: "CSpindle", linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("numa")]),
        // The control thread: a global actor whose executor is one dedicated pthread running an
        // epoll loop (sockets, eventfds) and the actor's jobs. Global-state code is isolated to it.
        // Also the threading primitives every layer uses: PosixMutex (the one mutex type) and
        // runOnControlThread (the one bridge from a plain thread onto the control thread).
        .target(name: "ControlThread", dependencies: ["CSpindle"], swiftSettings: gnuSource),
        // Types both the I/O side and the global-state side use.
        .target(name: "BlockCommon", swiftSettings: gnuSource),
        // The IOThread event loop and its io_uring (IOContext, completion tokens). Below the
        // block layer: it knows nothing of block devices.
        .target(name: "IOThreads", dependencies: ["ControlThread", "CSpindle", log], swiftSettings: hotPath),
        // I/O API: callable from any IOThread. Never imports BlockGraph.
        .target(name: "BlockIO", dependencies: ["BlockCommon", "ControlThread", "CSpindle", "IOThreads", "Qcow2Format", "CQcow2Zlib"], swiftSettings: hotPath),
        // vhost-user protocol: message codec, fd passing, guest memory, split rings, and the
        // device-agnostic backend session (control thread) with its device and queue protocols.
        .target(name: "VhostUser", dependencies: ["IOThreads", "ControlThread", "CSpindle", log], swiftSettings: hotPath),
        // The generic virtqueue server: kicks, polling, admission, request slots, inflight marks,
        // used ring and signalling, for any ring layout (VirtqueueRing) and device
        // (VirtqueueRequestHandler). Its hot path is @inlinable: specialised in the device's module.
        .target(name: "Virtqueues", dependencies: ["VhostUser", "IOThreads", "ControlThread", "CSpindle", log], swiftSettings: hotPath),
        .testTarget(name: "VirtqueuesTests", dependencies: ["SpindleTestSupport", "Virtqueues", "VhostUser", "IOThreads", "ControlThread", "CSpindle"], swiftSettings: gnuSource),
        // virtio-blk: config space, request parsing, status codes, the virtqueue server's handler,
        // and the device as the vhost-user session sees it.
        .target(name: "VirtioBlk", dependencies: ["Virtqueues", "VhostUser", "IOThreads", "BlockIO", "ControlThread", log, "BlockCommon"], swiftSettings: hotPath),
        // Global-state API: the control thread, the block graph, drain. Control thread only.
        .target(name: "BlockGraph", dependencies: ["BlockIO", "BlockCommon", "ControlThread", "CSpindle", "Qcow2Format", log], swiftSettings: gnuSource),
        // Block jobs: the job core (one job mutex; monitor API and driver API) and the mirror job.
        .target(name: "BlockJobs", dependencies: ["BlockGraph", "BlockIO", "BlockCommon", "ControlThread", "CSpindle", "IOThreads", log], swiftSettings: gnuSource),
        .testTarget(name: "BlockJobsTests", dependencies: ["BlockJobs", "BlockGraph", "BlockIO", "BlockCommon", "IOThreads", "ControlThread", "CSpindle"], swiftSettings: gnuSource),
        // vhost-user-blk exports: tie a socket, a virtio-blk device and a BlockBackend.
        .target(name: "Exports", dependencies: ["BlockGraph", "VirtioBlk", "VhostUser", "IOThreads", "BlockIO", "BlockCommon", "ControlThread", "CSpindle", log], swiftSettings: gnuSource),
        // The backend session in-process: a fake device over a socketpair, driven by the frontend library.
        .testTarget(name: "VhostUserSessionTests", dependencies: ["SpindleTestSupport", "VhostUser", "VhostUserFrontend", "IOThreads", "ControlThread", "CSpindle", log], swiftSettings: gnuSource),
        // qemu-storage-daemon compatible command-line parsing (pure, testable).
        .target(name: "SpindleOptions", dependencies: ["BlockCommon"], swiftSettings: gnuSource),
        .testTarget(name: "VhostUserTests", dependencies: ["SpindleTestSupport", "VhostUser", "CSpindle"], swiftSettings: gnuSource),
        .testTarget(name: "VirtioBlkTests", dependencies: ["SpindleTestSupport", "VirtioBlk", "VhostUser", "BlockIO", "IOThreads", "ControlThread", "CSpindle", "BlockCommon"], swiftSettings: gnuSource),
        .testTarget(name: "OptionsTests", dependencies: ["SpindleOptions", "BlockCommon"], swiftSettings: gnuSource),
        .testTarget(name: "IOThreadsTests", dependencies: ["IOThreads", "ControlThread", "CSpindle"], swiftSettings: gnuSource),
        .testTarget(name: "BlockTests", dependencies: ["BlockGraph", "BlockIO", "IOThreads", "BlockCommon", "ControlThread", "CSpindle"], swiftSettings: gnuSource),
        // Host NUMA topology (from a sysfs-shaped folder) and the queue-to-CPU placement policy.
        .target(name: "Placement", dependencies: ["CSpindle"], swiftSettings: gnuSource),
        .testTarget(name: "PlacementTests", dependencies: ["Placement"], swiftSettings: gnuSource),
        // The QMP monitor: protocol, commands, events. Control thread only.
        .target(name: "Monitor", dependencies: ["ControlThread", "BlockCommon", "SpindleOptions", "CSpindle", log], swiftSettings: gnuSource),
        .testTarget(name: "MonitorTests", dependencies: ["SpindleTestSupport", "Monitor", "ControlThread", "BlockCommon", "SpindleOptions", "CSpindle"], swiftSettings: gnuSource),
        // A vhost-user-blk frontend (the role QEMU plays), for the benchmark client and tests.
        .target(name: "VhostUserFrontend", dependencies: ["VhostUser", "CSpindle"], swiftSettings: gnuSource),
        .executableTarget(name: "spindle-bench", dependencies: ["VhostUserFrontend", "CSpindle"], swiftSettings: gnuSource),
        .testTarget(name: "FrontendTests", dependencies: ["SpindleTestSupport", "VhostUserFrontend", "VhostUser", "CSpindle"], swiftSettings: gnuSource),
        // One entry point per fuzz target (hostile-input parsers); Fuzz/ wraps them for libFuzzer,
        // FuzzRegressionTests replays the seed corpus and every crash ever found through them.
        .target(name: "FuzzEntryPoints", dependencies: ["VhostUser", "VirtioBlk", "Monitor", "SpindleOptions", "CSpindle", "Qcow2Format"], swiftSettings: gnuSource),
        .testTarget(name: "FuzzRegressionTests", dependencies: ["FuzzEntryPoints"], swiftSettings: gnuSource),
        // What the test suites share (only test targets depend on it): a driver-side mock of a
        // split virtqueue in test memory, a QMP line client, temporary directories, threads for
        // blocking test code.
        .target(name: "SpindleTestSupport", dependencies: ["VhostUser", "CSpindle"], path: "Tests/SpindleTestSupport", swiftSettings: gnuSource),
        // The daemon: its global state on the control thread (graph, IOThreads, exports, jobs,
        // monitors), the monitor's command target and the queue placement record.
        .target(name: "SpindleDaemon", dependencies: ["SpindleOptions", "Monitor", "BlockJobs", "Placement", "Exports", "VhostUser", "BlockGraph", "IOThreads", "BlockCommon", "ControlThread", log, "BlockIO"], swiftSettings: gnuSource),
        .testTarget(name: "DaemonTests", dependencies: ["SpindleTestSupport", "SpindleDaemon", "Monitor", "SpindleOptions", "VhostUserFrontend", "IOThreads", "BlockCommon", "ControlThread", "CSpindle"], swiftSettings: gnuSource),
        // qcow2's on-disk format, pure: header, extensions, features, table layout checks, L1/L2
        // and refcount entry decoding. Below BlockIO and BlockGraph, which both read images.
        .target(name: "Qcow2Format"),
        .testTarget(name: "Qcow2FormatTests", dependencies: ["Qcow2Format"]),
        // zlib's raw inflate for compressed qcow2 clusters, allocating from a caller's arena.
        .target(name: "CQcow2Zlib", linkerSettings: [.linkedLibrary("z")]),
        // The executable: parses the command line, starts one Daemon, waits for signals.
        .executableTarget(name: "spindle", dependencies: ["SpindleDaemon", "SpindleOptions", "ControlThread", log, "MetricsEndpoint"], swiftSettings: gnuSource),
        // The Prometheus metrics endpoint: a SwiftNIO HTTP/1 server on its own thread that samples
        // the daemon's figures on the control thread at each scrape. The only target with NIO.
        .target(name: "MetricsEndpoint", dependencies: ["SpindleDaemon", "SpindleOptions", "ControlThread", log, "BlockCommon", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Prometheus", package: "swift-prometheus")], swiftSettings: gnuSource),
    ],
    swiftLanguageModes: [.v6]
)
