import BlockCommon
import BlockGraph
import ControlThread
import Exports
import Monitor
import SpindleOptions

/// I/O limits: throttle groups from the command line and QMP, their limits at run time,
/// and block_set_io_throttle per export (see BlockGraph+Throttle.swift).
extension Daemon: ThrottleCommandTarget {
    /// `--object throttle-group` at start-up, before the nodes that use them.
    func addThrottleGroups(_ configuration: DaemonConfiguration) throws {
        for group in configuration.throttleGroups { try graph.addThrottleGroup(group) }
    }

    public func throttleGroupAdd(_ options: ThrottleGroupOptions) throws(QMPError) {
        guard iothreads[options.id] == nil else {
            throw QMPError(.genericError, "attempt to add duplicate property '\(options.id)' to object (type 'container')")
        }
        do {
            try graph.addThrottleGroup(options)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func throttleGroupLimits(id: String) throws(QMPError) -> ThrottleLimits {
        guard let group = graph.throttleGroups[id] else {
            throw QMPError(.deviceNotFound, "Device '\(id)' not found")
        }
        return group.limits
    }

    public func setThrottleGroupLimits(id: String, limits: ThrottleLimits) throws(QMPError) {
        guard graph.throttleGroups[id] != nil else { throw QMPError(.deviceNotFound, "Device '\(id)' not found") }
        do {
            try graph.setThrottleLimits(limits, group: id)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    public func setIOThrottle(_ request: IOThrottleRequest) async throws(QMPError) {
        guard let export = export(id: request.device) else {
            throw QMPError(.deviceNotFound, "Device '\(request.device)' not found")
        }
        do {
            try await graph.setIOThrottle(request.limits, for: export.backend, group: request.group)
        } catch {
            throw QMPError(.genericError, error.message)
        }
    }

    /// object-del of a throttle group: true if `id` named one (deleted, or refused while used).
    func deleteThrottleGroupObject(id: String) throws(QMPError) -> Bool {
        guard graph.throttleGroups[id] != nil else { return false }
        do {
            try graph.deleteThrottleGroup(id)
        } catch {
            throw QMPError(.genericError, error.message)
        }
        return true
    }
}
