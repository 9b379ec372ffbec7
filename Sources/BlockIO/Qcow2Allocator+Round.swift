import Glibc
import Qcow2Format

extension Qcow2Allocator {
    /// A list of requests through `formatNext`.
    typealias RequestList = (first: UnsafeMutablePointer<BlockRequest>?, last: UnsafeMutablePointer<BlockRequest>?)

    /// The worker's round for the requests listed from `batch` (through `formatNext`), in
    /// their order: each one's next piece is planned (`plan`) and the round finished; then
    /// `complete` gets each planned request and its result (bytes done, or -errno; a failure
    /// is reported once per image, as the IOThread reports its own). Returns the requests
    /// that must wait for the next round, in order.
    func runRound(_ io: Qcow2IO, _ batch: UnsafeMutablePointer<BlockRequest>,
                  complete: (UnsafeMutablePointer<BlockRequest>, Int32) -> Void) -> RequestList {
        withLock {
            round.reset()
            var waiting: RequestList = (nil, nil)
            var next: UnsafeMutablePointer<BlockRequest>? = batch
            while let request = next {
                next = request.pointee.formatNext
                request.pointee.formatNext = nil
                if plan(io, request, from: request.pointee.formatDone) { continue }
                if let last = waiting.last { last.pointee.formatNext = request } else { waiting.first = request }
                waiting.last = request
            }
            finishRound(io)
            for plan in round.plans {
                var result = plan.result
                if result <= 0 {
                    let metadata = result == -Int64(EUCLEAN)  // inconsistent metadata: the image gets marked corrupt
                    let code = io.corruption(plan.request, metadata ? .writeOverlapsMetadata : .allocationFailed)
                    if result == 0 || metadata { result = Int64(code) }
                }
                complete(plan.request, Int32(clamping: result))
            }
            return waiting
        }
    }

    /// The rest of a round, once every plan's data is written (under the lock):
    /// 1. one fdatasync, if anything written must be durable before an entry points at it
    ///    (new L2 tables, their refcounts, data over a backing file or an old cluster): the
    ///    group commit, one for all the round's requests;
    /// 2. the L2 entries (into the file, then into the shared cache, which bumps its
    ///    generation) and the L1 entries of new tables (then into `Qcow2IO`'s L1);
    /// 3. one fdatasync if a request asked for FUA;
    /// 4. if clusters lost references: one fdatasync (the entries that dropped them are
    ///    durable), then the refcounts go down, and a discarded cluster that is free now has
    ///    its space punched out of the file.
    /// A failed step fails the requests it concerns; plans keep their results otherwise.
    func finishRound(_ io: Qcow2IO) {
        if round.needsSync {
            let rc = Qcow2SyncIO.datasync(fd)
            if rc < 0 { failAll(rc) }
        }
        var fua = false
        for index in round.plans.indices where round.plans[index].result > 0 {
            let plan = round.plans[index]
            fua = fua || plan.request.pointee.fua
            guard plan.count > 0 else { continue }
            let rc: Int32
            if plan.tableAt >= 0 {
                rc = Qcow2SyncIO.writeBigEndian(fd, plan.tableOffset | Qcow2Entries.copiedFlag, at: layout.l1Offset + plan.l1Index * 8)
                if rc == 0 { io.setL2TableOffset(plan.l1Index, plan.tableOffset) }
            } else {
                let entries = round.arena + plan.entriesAt
                rc = Qcow2SyncIO.write(fd, entries, Int(plan.count) * 8, at: plan.tableOffset + plan.first * 8)
                if rc == 0 { io.cache.update(l1Index: plan.l1Index, first: Int(plan.first), count: Int(plan.count), from: entries) }
            }
            if rc < 0 { round.plans[index].result = Int64(rc) }
        }
        if fua {
            let rc = Qcow2SyncIO.datasync(fd)
            if rc < 0 {
                for index in round.plans.indices where round.plans[index].request.pointee.fua { round.plans[index].result = Int64(rc) }
            }
        }
        releaseDropped()
    }

    private func failAll(_ rc: Int32) {
        for index in round.plans.indices where round.plans[index].result > 0 { round.plans[index].result = Int64(rc) }
    }

    /// Step 4 of `finishRound`. A plan whose entries did not make it keeps its references.
    private func releaseDropped() {
        guard round.releases.contains(where: { round.plans[$0.plan].result > 0 }) else { return }
        let synced = Qcow2SyncIO.datasync(fd)
        let clusterBits = UInt64(layout.clusterBits)
        for release in round.releases where round.plans[release.plan].result > 0 {
            var rc = synced
            let firstCluster = release.hostOffset >> clusterBits
            let lastCluster = (release.hostOffset + max(release.byteCount, 1) - 1) >> clusterBits
            for cluster in firstCluster...lastCluster where rc == 0 {
                let left = dropReference(cluster)
                if left < 0 { rc = Int32(left) }
                if left == 0 && release.punch {
                    // Space back to the file system; the cluster reads zeroes (it is never reused).
                    _ = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(cluster << clusterBits), off_t(layout.clusterSize))
                }
            }
            if rc < 0 { round.plans[release.plan].result = Int64(rc) }
        }
    }

    /// Drops one reference to `cluster` (no longer pointed at, durably): the refcount left,
    /// or -errno (-EIO if it was 0 already: the image's refcounts are wrong).
    func dropReference(_ cluster: UInt64) -> Int64 {
        let current = refcount(cluster)
        if current < 0 { return current }
        guard current > 0 else { return -Int64(EIO) }
        let rc = setRefcount(cluster, to: UInt64(current) - 1)
        return rc < 0 ? Int64(rc) : current - 1
    }
}
