import Foundation

/// Runs blocking code (a frontend's handshake, a QMP client's reads) on a thread of its own:
/// not on the control thread (the code under test needs it to answer) and not on Swift's
/// cooperative pool (as small as two threads; a test blocked there starves every other
/// test's async work, which `Task.detached` does not avoid).
public func onThreadOfItsOwn<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Carries a non-Sendable object across `onThreadOfItsOwn`; one thread uses it at a time.
public final class Handed<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
