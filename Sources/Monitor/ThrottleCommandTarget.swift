import BlockCommon
import ControlThread
import SpindleOptions

/// What the I/O-limit commands act on (throttle-group objects, qom-get/qom-set of their
/// limits, block_set_io_throttle). A separate protocol so that a MonitorCommandTarget
/// without throttling still works: the monitor then answers these commands with
/// CommandNotFound. Runs on the control thread.
@ControlActor
public protocol ThrottleCommandTarget: AnyObject {
    /// object-add qom-type=throttle-group.
    func throttleGroupAdd(_ options: ThrottleGroupOptions) throws(QMPError)
    /// The limits of a throttle group, by id (qom-get).
    func throttleGroupLimits(id: String) throws(QMPError) -> ThrottleLimits
    /// Replaces a throttle group's limits (qom-set: the monitor merged what was given).
    func setThrottleGroupLimits(id: String, limits: ThrottleLimits) throws(QMPError)
    /// block_set_io_throttle for one export.
    func setIOThrottle(_ request: IOThrottleRequest) async throws(QMPError)
}

/// block_set_io_throttle's arguments: the export (by `id` or `device`, both the export id
/// in Spindle), its new limits (all zero: none) and the group (default: the export id).
public struct IOThrottleRequest: Sendable, Equatable {
    public var device: String
    public var limits: ThrottleLimits
    public var group: String?
    public init(device: String, limits: ThrottleLimits, group: String? = nil) {
        self.device = device
        self.limits = limits
        self.group = group
    }
}
