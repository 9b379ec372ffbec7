import BlockJobs
import Glibc
import Synchronization
import Testing

/// Several "monitor clients" on their own threads query, pause, resume, complete and cancel
/// jobs while the jobs' bodies run on theirs. Every verb sees a consistent job (found and
/// acted on under one hold of the job mutex); run under ThreadSanitizer it shows the job
/// state has no data race (swift test --sanitize=thread --filter JobMutexTests).
@Suite struct JobMutexTests {
    @Test func concurrentMonitorClientsWhileJobsRun() throws {
        let registry = JobRegistry()
        let jobCount = 4
        var jobs: [ScriptedJob] = []
        for index in 0..<jobCount {
            let driver = try registry.withJobLock { table throws(JobError) in
                try table.create(id: "job\(index)", type: "mirror", options: JobOptions(autoDismiss: false), registry: registry)
            }
            let job = ScriptedJob(driver)
            job.becomeReady.store(index % 2 == 0, ordering: .sequentiallyConsistent)
            jobs.append(job)
            job.run()
        }
        let accepted = Atomic<Int>(0)
        let refused = Atomic<Int>(0)
        let clients = (0..<4).map { client in
            spawn {
                var seed = UInt64(client + 1) &* 0x9E37_79B9_7F4A_7C15
                for _ in 0..<2000 {
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    let id = "job\(Int(seed >> 33) % jobCount)"
                    let verb = Int(seed >> 40) % 6
                    do {
                        try registry.withJobLock { table throws(JobError) in
                            let before = try table.find(id)
                            switch verb {
                            case 0: _ = table.query()
                            case 1: try table.pause(id)
                            case 2: try table.resume(id)
                            case 3: if before.status == .ready { try table.complete(id) } else { _ = try table.find(id) }
                            case 4: if seed % 7 == 0 { try table.cancel(id) }
                            default: _ = try table.find(id)
                            }
                            // Under the same hold, the job cannot have moved on by itself.
                            #expect(try table.find(id).status == before.status)
                        }
                        accepted.wrappingAdd(1, ordering: .relaxed)
                    } catch {
                        refused.wrappingAdd(1, ordering: .relaxed)
                    }
                }
            }
        }
        for client in clients { pthread_join(client, nil) }
        // Whatever is left running ends now.
        for index in 0..<jobCount {
            try? registry.withJobLock { table throws(JobError) in
                if (try? table.find("job\(index)").status) == .paused || (try? table.find("job\(index)").status) == .standby {
                    try table.resume("job\(index)")
                }
                try table.cancel("job\(index)")
            }
        }
        for job in jobs { job.join() }
        let final = registry.withJobLock { $0.query() }
        #expect(final.count == jobCount)
        #expect(final.allSatisfy { $0.status == .concluded })
        #expect(accepted.load(ordering: .relaxed) > 0)
        _ = registry.takeEvents()
    }
}

private func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
    var thread = pthread_t()
    pthread_create(&thread, nil, { raw in
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, Unmanaged.passRetained(Box(body)).toOpaque())
    return thread
}
