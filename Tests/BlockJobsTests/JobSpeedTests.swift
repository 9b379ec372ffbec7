@testable import BlockJobs
import Testing

/// block-job-set-speed on the job table, and the copy threads' pace seeing a new limit.
@Suite struct JobSpeedTests {
    private func makeJob(_ registry: JobRegistry, _ id: String, type: String = "stream", speed: UInt64 = 0) throws -> JobDriver {
        try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: id, type: type, options: JobOptions(speed: speed), registry: registry)
        }
    }

    @Test func setSpeedChangesWhatTheDriverAndQueryBlockJobsSee() throws {
        let registry = JobRegistry()
        let driver = try makeJob(registry, "s0", speed: 4096)
        #expect(driver.start())
        #expect(driver.speed == 4096)
        try registry.withJobLock { jobs throws(JobError) in try jobs.setSpeed("s0", to: 1 << 30) }
        #expect(driver.speed == 1 << 30)
        let listed = registry.withJobLock { $0.queryBlockJobs() }
        #expect(listed.map(\.id) == ["s0"])
        #expect(listed.first?.speed == 1 << 30)
        #expect(listed.first?.status == .running)
        #expect(listed.first?.busy == true)
        #expect(listed.first?.ready == false)
        try registry.withJobLock { jobs throws(JobError) in try jobs.setSpeed("s0", to: 0) }
        #expect(driver.speed == 0)
    }

    @Test func negativeSpeedIsRefusedWithQemuTextAndLeavesTheLimit() throws {
        let registry = JobRegistry()
        let driver = try makeJob(registry, "s0", speed: 512)
        #expect(driver.start())
        #expect(throws: JobError("Parameter 'speed' expects a non-negative value")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.setSpeed("s0", to: -1) }
        }
        #expect(driver.speed == 512)
    }

    @Test func setSpeedOnAMissingOrConcludedJobIsRefused() throws {
        let registry = JobRegistry()
        #expect(throws: JobError("Job not found")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.setSpeed("nope", to: 1) }
        }
        let driver = try registry.withJobLock { jobs throws(JobError) in
            try jobs.create(id: "c0", type: "commit", options: JobOptions(autoDismiss: false), registry: registry)
        }
        #expect(driver.start())
        driver.conclude(.success)
        #expect(throws: JobError("Job 'c0' in state 'concluded' cannot accept command verb 'set-speed'")) {
            try registry.withJobLock { jobs throws(JobError) in try jobs.setSpeed("c0", to: 1) }
        }
    }

    @Test func createJobsAreNotBlockJobs() throws {
        let registry = JobRegistry()
        _ = try makeJob(registry, "cr0", type: "create")
        _ = try makeJob(registry, "m0", type: "mirror")
        let (isBlock, listed) = registry.withJobLock { ($0.isBlockJob("cr0"), $0.queryBlockJobs().map(\.id)) }
        #expect(!isBlock)
        #expect(listed == ["m0"])
    }

    @Test func paceWaitsForTheLimitAndANewLimitStartsAFreshWindow() {
        var pace = CopyPace()
        let second: UInt64 = 1_000_000_000
        let start: UInt64 = 10 * second
        pace.restart(at: start)
        #expect(pace.delay(speed: 1 << 20, now: start) == 0)
        pace.copied(1 << 20)
        // 1 MiB at 1 MiB/s, 0.25 s into the window: 0.75 s ahead.
        #expect(pace.delay(speed: 1 << 20, now: start + second / 4) == 3 * second / 4)
        // Raised: what was copied under the old limit no longer counts.
        #expect(pace.delay(speed: 1 << 30, now: start + second / 4) == 0)
        pace.copied(1 << 20)
        #expect(pace.delay(speed: 1 << 30, now: start + second / 4) < second / 1000 + 1)
        // Unlimited: never waits, however much was copied.
        pace.copied(1 << 40)
        #expect(pace.delay(speed: 0, now: start + second / 4) == 0)
    }

    @Test func paceNeverSleepsMoreThanASecondNorOverflows() {
        var pace = CopyPace()
        pace.restart(at: 0)
        #expect(pace.delay(speed: 1, now: 0) == 0)
        pace.copied(UInt64.max / 2)
        #expect(pace.delay(speed: 1, now: 1) == 1_000_000_000)
    }
}
