import BlockCommon
import ControlThread
import CSpindle
import Glibc
import Logging

/// Tells the control thread when an rbd image's header changed, whoever changed it (an
/// `rbd resize` on another host, another client's snapshot): librbd's update watch calls
/// back on one of librbd's threads, where a C function only writes an eventfd; the control
/// thread's loop watches that eventfd and runs `changed` there. Nothing else happens on
/// librbd's thread. Own changes (block_resize) fire it too; `changed` must be idempotent.
@ControlActor
final class RbdUpdateWatch {
    private let image: UnsafeMutableRawPointer
    private let eventFD: Int32
    private let handle: UInt64
    private var loopWatch: FileDescriptorWatch?
    private var stopped = false

    private init(image: UnsafeMutableRawPointer, eventFD: Int32, handle: UInt64) {
        self.image = image
        self.eventFD = eventFD
        self.handle = handle
    }

    /// Registers the watch on an open image. Throws (and leaves nothing registered) if
    /// librbd or the control loop refuse it.
    static func start(image: UnsafeMutableRawPointer, node: NodeName, imageName: String,
                      changed: @escaping @ControlActor () -> Void) throws(BlockError) -> RbdUpdateWatch {
        let fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard fd >= 0 else {
            let code = errno
            throw BlockError(errno: code, "node '\(node)': cannot create an eventfd to watch '\(imageName)' for resizes: \(String(cString: strerror(code)))")
        }
        var handle: UInt64 = 0
        let rc = spindle_rbd_update_watch(image, &handle, fd)
        guard rc == 0 else {
            Glibc.close(fd)
            throw BlockError(errno: -rc, "node '\(node)': librbd refuses to watch '\(imageName)' for changes (rbd_update_watch): \(String(cString: strerror(-rc)))")
        }
        let watch = RbdUpdateWatch(image: image, eventFD: fd, handle: handle)
        do {
            watch.loopWatch = try ControlExecutor.shared.watch(fd: fd, events: EPOLLIN.rawValue) { [weak watch] _ in
                guard let watch, !watch.stopped else { return }
                watch.consumeWakeups()
                changed()
            }
        } catch {
            _ = spindle_rbd_update_unwatch(image, handle)
            Glibc.close(fd)
            throw BlockError(errno: EIO, "node '\(node)': cannot watch '\(imageName)' for changes: \(error.message)")
        }
        return watch
    }

    /// Several notifications before the control thread ran are one: read the counter to 0.
    private func consumeWakeups() {
        var count: UInt64 = 0
        _ = read(eventFD, &count, MemoryLayout<UInt64>.size)
    }

    /// Unregisters (librbd waits for a callback that is running) before the eventfd closes,
    /// so no callback can write to a closed or reused descriptor.
    func stop() {
        guard !stopped else { return }
        stopped = true
        let rc = spindle_rbd_update_unwatch(image, handle)
        if let loopWatch { ControlExecutor.shared.unwatch(loopWatch) }
        loopWatch = nil
        guard rc == 0 else {
            // A callback may still come: leave the eventfd open (one descriptor) rather
            // than let librbd write into a descriptor number that gets reused.
            Logger(label: "spindle.rbd").warning("rbd_update_unwatch failed; its eventfd is left open until the process ends", metadata: [
                "error": "\(String(cString: strerror(-rc)))"])
            return
        }
        Glibc.close(eventFD)
    }
}
