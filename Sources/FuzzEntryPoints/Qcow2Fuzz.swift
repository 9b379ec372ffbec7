import Qcow2Format

/// Input: the first bytes of a qcow2 image (header, extensions, backing file name), which
/// is also taken as the whole file for the layout checks. Invariants: whatever is accepted
/// has its tables inside the file, aligned, off the header cluster and apart.
func fuzzQcow2Header(_ input: UnsafeRawBufferPointer) {
    guard let header = try? Qcow2Header.parse(input) else { return }
    precondition((9...21).contains(header.clusterBits), "cluster_bits \(header.clusterBits) accepted")
    precondition(header.refcountOrder <= 6, "refcount_order \(header.refcountOrder) accepted")
    if let name = header.backingFileName { precondition(name.utf8.count <= 1023, "backing file name too long") }
    _ = try? header.features.check(header: header, readOnly: true)
    let fileLength = UInt64(input.count)
    guard let layout = try? Qcow2Layout.validate(header, fileLength: fileLength) else { return }
    let cluster = layout.clusterSize
    for (offset, bytes) in [(layout.l1Offset, layout.l1Bytes), (layout.refcountTableOffset, layout.refcountTableBytes)] where bytes > 0 {
        precondition(offset % cluster == 0 && offset >= cluster, "table at \(offset) misplaced")
        precondition(offset <= fileLength && bytes <= fileLength - offset, "table at \(offset) past the file")
    }
    precondition(layout.l1Bytes <= Qcow2Header.maximumL1Bytes)
    precondition(UInt64(layout.l1Size) >= layout.l2TablesNeeded, "L1 too small for the size")
}

/// Input: byte 0 picks cluster_bits (9...21), then little-endian L2 entries. Invariants:
/// data clusters are aligned and never on the header or tables; compressed ones are off the
/// header and at most two clusters long.
func fuzzQcow2L2Entry(_ input: UnsafeRawBufferPointer) {
    var bytes = FuzzBytes(input)
    let clusterBits = 9 + UInt32(bytes.u8() % 13)
    let cluster: UInt64 = 1 << UInt64(clusterBits)
    // Refcount table in cluster 1, a two-cluster L1 table in clusters 2-3, a 64-cluster file.
    let layout = Qcow2Layout(clusterBits: clusterBits, virtualSize: cluster << 10, fileLength: cluster * 64,
                             l1Offset: cluster * 2, l1Size: UInt32(cluster / 4), refcountTableOffset: cluster,
                             refcountTableBytes: cluster)
    while !bytes.isAtEnd {
        let raw = bytes.u64()
        switch layout.check(Qcow2Entries.decodeL2(raw, clusterBits: clusterBits)) {
        case .data(let host, _):
            precondition(host % cluster == 0 && host >= cluster * 4, "data cluster at \(host) accepted")
        case .compressed(let host, let count):
            precondition(host >= cluster * 4 && host < layout.fileLength, "compressed cluster at \(host) accepted")
            precondition(count >= 1 && count <= 2 * cluster, "compressed size \(count)")
        case .unallocated, .zero, .corrupt:
            break
        }
        _ = Qcow2Entries.l2TableOffset(l1Entry: raw, clusterBits: clusterBits).map { layout.checkL2Table($0) }
    }
}
