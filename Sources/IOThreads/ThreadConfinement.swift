import Glibc
import Synchronization

/// Which thread an I/O-side object belongs to, checked in debug builds only (swift-nio's
/// `assertInEventLoop`): the object's methods meant for its own thread call `assertOwned`,
/// which release builds compile out, so the hot path pays nothing there.
struct ThreadOwner: ~Copyable {
    /// pthread_self() of the owning thread; 0 while none is bound.
    private let owner = Atomic<UInt>(0)

    /// Makes the calling thread the owner.
    func bindToCurrentThread() {
        owner.store(UInt(pthread_self()), ordering: .releasing)
    }

    /// True on the owning thread (and while no thread is bound).
    var isCurrent: Bool {
        let bound = owner.load(ordering: .acquiring)
        return bound == 0 || pthread_equal(pthread_t(bound), pthread_self()) != 0
    }

    @inline(__always)
    func assertOwned(_ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        #if DEBUG
        precondition(isCurrent, "\(what()) called off its own thread", file: file, line: line)
        #endif
    }
}
