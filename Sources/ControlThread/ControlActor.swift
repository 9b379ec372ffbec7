/// The control thread's global actor. Everything that changes global state (the block graph,
/// BlockBackends' lifecycle, exports, IOThreads) is isolated to it, so the compiler refuses a
/// call from an IOThread; `ControlActor.preconditionOnControlThread()` is the runtime second line.
@globalActor
public actor ControlActor {
    public static let shared = ControlActor()

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        ControlExecutor.shared.asUnownedSerialExecutor()
    }

    /// Whether the calling thread is the control thread.
    public static var isOnControlThread: Bool { ControlExecutor.shared.isCurrentThread }

    /// The cheap runtime check each GS function makes, besides its static isolation.
    @inline(__always)
    public static func preconditionOnControlThread(_ what: @autoclosure () -> String = "", file: StaticString = #fileID, line: UInt = #line) {
        precondition(ControlExecutor.shared.isCurrentThread,
                     "global-state function \(what()) called off the control thread", file: file, line: line)
    }

    /// Runs `body` with control-actor isolation when the caller is already on the control
    /// thread (e.g. inside an fd callback of the control loop); traps otherwise.
    public static func assumeIsolated<T: Sendable>(_ body: @ControlActor () throws -> T, file: StaticString = #fileID, line: UInt = #line) rethrows -> T {
        preconditionOnControlThread("assumeIsolated", file: file, line: line)
        typealias Unisolated = () throws -> T
        return try withoutActuallyEscaping(body) { isolated in
            try unsafeBitCast(isolated, to: Unisolated.self)()
        }
    }
}
