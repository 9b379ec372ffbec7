import BlockCommon
import BlockJobs
import Monitor

/// One export's figures for the metrics endpoint.
public struct ExportMetricsSample: Sendable, Equatable {
    public var id: String
    /// The node the export uses now (after a mirror's pivot, the target).
    public var nodeName: String
    /// 1 while a frontend is connected (one at a time).
    public var frontends: Int
    /// `num-queues`: the queues the device offers.
    public var queues: Int
    /// Requests its BlockBackend has begun and not ended (all queues).
    public var inFlightRequests: Int
    public var revoked: Bool
}

/// One running virtqueue and the IOThread serving it.
public struct QueueMetricsSample: Sendable, Equatable {
    public var export: String
    public var queue: Int
    public var iothread: String
}

/// One throttle group's figures: its limits and how many requests waited for them.
public struct ThrottleGroupMetricsSample: Sendable, Equatable {
    public var id: String
    /// The average limit of each bucket that has one, by QEMU's member name (`iops-total`, ...).
    public var limits: [(bucket: String, average: UInt64)]
    public var waitedRequests: UInt64
    public var passedRequests: UInt64
    public var waitingRequests: Int

    public static func == (a: Self, b: Self) -> Bool {
        a.id == b.id && a.limits.map(\.bucket) == b.limits.map(\.bucket) && a.limits.map(\.average) == b.limits.map(\.average)
            && a.waitedRequests == b.waitedRequests && a.passedRequests == b.passedRequests && a.waitingRequests == b.waitingRequests
    }
}

/// Everything `/metrics` shows, taken in one control-thread turn so the figures fit together.
/// Block statistics (`query-blockstats`) join here as one more field when they exist.
public struct DaemonMetricsSample: Sendable {
    public var version: String
    public var iothreads: [IOThreadInfo]
    public var exports: [ExportMetricsSample]
    public var queues: [QueueMetricsSample]
    public var nodes: [BlockNodeInfo]
    public var jobs: [JobQueryInfo]
    /// Every job status there is (QEMU's JobStatus), for a state-set gauge.
    public var jobStatuses: [String]
    /// query-blockstats' figures: per export, per queue.
    public var blockStats: BlockStatsReport
    /// Throttle groups, by id.
    public var throttleGroups: [ThrottleGroupMetricsSample] = []
}

extension Daemon {
    /// The figures the metrics endpoint renders: the same as the query commands', plus what
    /// only the daemon sees (frontends, in-flight counts, queue placement). Cheap: counters
    /// are read, nothing is counted for it on the IOThreads.
    public func metricsSample() -> DaemonMetricsSample {
        let exportSamples = exports.map { export in
            ExportMetricsSample(id: export.options.id,
                                nodeName: graph.servedNode(of: export.backend).map { "\($0.name)" } ?? export.options.nodeName.rawValue,
                                frontends: export.hasFrontend ? 1 : 0, queues: export.options.numQueues,
                                inFlightRequests: export.backend.inFlightRequests, revoked: export.isRevoked)
        }
        let queueSamples = iothreads.keys.sorted().flatMap { thread in
            placements.queueKeys(servedBy: thread).map { QueueMetricsSample(export: $0.export, queue: $0.queue, iothread: thread) }
        }
        let throttleSamples = graph.throttleGroups.keys.sorted().compactMap { id -> ThrottleGroupMetricsSample? in
            guard let group = graph.throttleGroups[id] else { return nil }
            let limits = group.limits
            let averages = ThrottleBucketKind.allCases.compactMap { kind -> (bucket: String, average: UInt64)? in
                limits[kind].average == 0 ? nil : (kind.name, limits[kind].average)
            }
            return ThrottleGroupMetricsSample(id: id, limits: averages, waitedRequests: group.waitedRequests,
                                              passedRequests: group.passedRequests, waitingRequests: group.waitingRequests)
        }
        return DaemonMetricsSample(version: spindleVersion, iothreads: queryIOThreads(), exports: exportSamples,
                                   queues: queueSamples, nodes: queryNamedBlockNodes(), jobs: queryJobs(),
                                   jobStatuses: JobStatus.allCases.map(\.rawValue), blockStats: queryBlockStats(),
                                   throttleGroups: throttleSamples)
    }
}

extension QueuePlacementTable {
    /// The queues `thread` serves, in export then queue order.
    func queueKeys(servedBy thread: String) -> [QueueKey] {
        keys(servedBy: thread).sorted { ($0.export, $0.queue) < ($1.export, $1.queue) }
    }
}
