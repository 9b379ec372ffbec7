import BlockJobs
import Glibc
import Synchronization
import Testing

/// A job body under the test's control, on its own thread: it runs until told to become
/// ready, then waits for complete or cancel, as the mirror does, without any I/O.
final class ScriptedJob: @unchecked Sendable {
    let driver: JobDriver
    let becomeReady = Atomic<Bool>(false)
    let finished = Atomic<Bool>(false)
    private var thread = pthread_t()

    init(_ driver: JobDriver) { self.driver = driver }

    func run() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let job = Unmanaged<ScriptedJob>.fromOpaque(raw!).takeRetainedValue()
            job.body()
            return nil
        }, box)
    }

    func join() { pthread_join(thread, nil) }

    private func body() {
        defer { finished.store(true, ordering: .sequentiallyConsistent) }
        guard driver.start() else { driver.conclude(.cancelled); return }
        var copied: UInt64 = 0
        while true {
            switch driver.sleep(nanoseconds: 1_000_000) {
            case .cancel:
                driver.conclude(.cancelled)
                return
            case .complete:
                driver.conclude(driver.awaitFinalize() ? .success : .cancelled)
                return
            case .proceed:
                copied += 1
                driver.setProgress(current: copied, total: copied + 10)
                if becomeReady.load(ordering: .sequentiallyConsistent) { driver.setReady() }
            }
        }
    }
}

func status(_ registry: JobRegistry, _ id: String) -> JobStatus? {
    registry.withJobLock { jobs in (try? jobs.find(id))?.status }
}

/// Polls (the job runs on its own thread) until `condition` holds; fails after ~20 s.
func eventually(_ what: String, _ condition: () -> Bool) {
    for _ in 0..<20_000 {
        if condition() { return }
        usleep(1000)
    }
    Issue.record("timed out waiting for \(what)")
}

func statusChanges(_ events: [JobEvent], _ id: String) -> [JobStatus] {
    events.compactMap { if case .statusChange(id, let status) = $0 { status } else { nil } }
}

@Suite struct JobLifecycleTests {
    private func makeJob(_ registry: JobRegistry, _ id: String = "job0", options: JobOptions = JobOptions()) throws -> ScriptedJob {
        let driver = try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: id, type: "mirror", options: options, registry: registry)
        }
        return ScriptedJob(driver)
    }

    @Test func monitorVerbsAreRefusedWithQEMUsTextInEachState() throws {
        let registry = JobRegistry()
        let job = try makeJob(registry)
        // created: complete, finalize, dismiss refused.
        #expect(throws: JobError("Job 'job0' in state 'created' cannot accept command verb 'complete'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.complete("job0") }
        }
        #expect(throws: JobError("Job 'job0' in state 'created' cannot accept command verb 'finalize'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.finalize("job0") }
        }
        #expect(throws: JobError("Job 'job0' in state 'created' cannot accept command verb 'dismiss'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.dismiss("job0") }
        }
        #expect(throws: JobError("Job not found")) { try registry.withJobLock { jobs throws(JobError) in try jobs.pause("nope") } }
        #expect(throws: JobError("Can't resume a job that was not paused")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.resume("job0") }
        }
        #expect(throws: JobError("Job ID 'job0' already in use")) {
            _ = try registry.withJobLock { jobs throws(JobError) in try jobs.create(id: "job0", type: "mirror", options: JobOptions(), registry: registry) }
        }
        #expect(throws: JobError("Invalid job ID ''")) {
            _ = try registry.withJobLock { jobs throws(JobError) in try jobs.create(id: "", type: "mirror", options: JobOptions(), registry: registry) }
        }
        job.run()
        eventually("running") { status(registry, "job0") == .running }
        #expect(throws: JobError("Job 'job0' in state 'running' cannot accept command verb 'complete'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.complete("job0") }
        }
        try registry.withJobLock { jobs throws(JobError) in try jobs.pause("job0") }
        #expect(throws: JobError("Job is already paused")) { try registry.withJobLock { jobs throws(JobError) in try jobs.pause("job0") } }
        eventually("paused") { status(registry, "job0") == .paused }
        try registry.withJobLock { jobs throws(JobError) in try jobs.resume("job0") }
        eventually("running again") { status(registry, "job0") == .running }
        job.becomeReady.store(true, ordering: .sequentiallyConsistent)
        eventually("ready") { status(registry, "job0") == .ready }
        #expect(throws: JobError("Job 'job0' in state 'ready' cannot accept command verb 'dismiss'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.dismiss("job0") }
        }
        try registry.withJobLock { jobs throws(JobError) in try jobs.complete("job0") }
        job.join()
        #expect(status(registry, "job0") == nil)  // auto-dismissed
        let events = registry.takeEvents()
        #expect(statusChanges(events, "job0") == [.created, .running, .paused, .running, .ready, .waiting, .pending, .concluded, .null])
        #expect(events.contains { if case .ready = $0 { true } else { false } })
        #expect(events.contains { if case .completed(_, error: nil) = $0 { true } else { false } })
    }

    @Test func manualFinalizeAndDismiss() throws {
        let registry = JobRegistry()
        let job = try makeJob(registry, options: JobOptions(autoFinalize: false, autoDismiss: false))
        job.becomeReady.store(true, ordering: .sequentiallyConsistent)
        job.run()
        eventually("ready") { status(registry, "job0") == .ready }
        try registry.withJobLock { jobs throws(JobError) in try jobs.complete("job0") }
        eventually("pending") { status(registry, "job0") == .pending }
        #expect(throws: JobError("Job 'job0' in state 'pending' cannot accept command verb 'pause'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.pause("job0") }
        }
        try registry.withJobLock { jobs throws(JobError) in try jobs.finalize("job0") }
        job.join()
        #expect(status(registry, "job0") == .concluded)
        try registry.withJobLock { jobs throws(JobError) in try jobs.dismiss("job0") }
        #expect(status(registry, "job0") == nil)
        let events = registry.takeEvents()
        #expect(statusChanges(events, "job0") == [.created, .running, .ready, .waiting, .pending, .concluded, .null])
        #expect(events.contains(.pending(id: "job0", type: "mirror")))
    }

    /// job-cancel in each state that accepts it ends the job as cancelled, with QEMU's error.
    @Test(arguments: [JobStatus.created, .running, .paused, .ready, .standby, .pending])
    func cancelIn(_ state: JobStatus) throws {
        let registry = JobRegistry()
        let job = try makeJob(registry, options: JobOptions(autoFinalize: state != .pending, autoDismiss: false))
        func act(_ body: (inout JobTable) throws(JobError) -> Void) throws { try registry.withJobLock(body) }
        if state != .created { job.run() }
        switch state {
        case .created:
            break
        case .running:
            eventually("running") { status(registry, "job0") == .running }
        case .paused:
            eventually("running") { status(registry, "job0") == .running }
            try act { jobs throws(JobError) in try jobs.pause("job0") }
            eventually("paused") { status(registry, "job0") == .paused }
        case .ready, .standby, .pending:
            job.becomeReady.store(true, ordering: .sequentiallyConsistent)
            eventually("ready") { status(registry, "job0") == .ready }
            if state == .standby {
                try act { jobs throws(JobError) in try jobs.pause("job0") }
                eventually("standby") { status(registry, "job0") == .standby }
            }
            if state == .pending {
                try act { jobs throws(JobError) in try jobs.complete("job0") }
                eventually("pending") { status(registry, "job0") == .pending }
            }
        default:
            Issue.record("unexpected state \(state)")
        }
        try act { jobs throws(JobError) in try jobs.cancel("job0") }
        if state == .created { job.run() }
        job.join()
        let info = try registry.withJobLock { jobs throws(JobError) in try jobs.find("job0") }
        #expect(info.status == .concluded)
        #expect(info.error == "Operation canceled")
        let events = registry.takeEvents()
        #expect(statusChanges(events, "job0").suffix(2) == [.aborting, .concluded])
        #expect(events.contains { if case .cancelled = $0 { true } else { false } })
        // Nothing more to cancel once concluded.
        #expect(throws: JobError("Job 'job0' in state 'concluded' cannot accept command verb 'cancel'")) {
            try act { jobs throws(JobError) in try jobs.cancel("job0") }
        }
    }
}
