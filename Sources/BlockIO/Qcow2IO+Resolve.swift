import Qcow2Format

/// What the next piece of a request is, found by walking the chain's metadata.
enum Qcow2Piece {
    case zeroes(count: UInt64)
    /// `count` bytes at `hostOffset` of file `fd` (a cluster run, or a raw backing image).
    case read(fd: Int32, hostOffset: UInt64, count: UInt64)
    /// The L2 table at `tableOffset` of the layer `depth` must be read first.
    case loadTable(depth: UInt8, fd: Int32, l1Index: UInt64, tableOffset: UInt64)
    case compressed(fd: Int32, clusterBits: UInt32, hostOffset: UInt64, byteCount: UInt64, offsetInCluster: UInt64, count: UInt64)
    case corrupt(Qcow2EntryProblem)
}

extension Qcow2IO {
    /// The piece at guest offset `position`, at most `span` bytes, as this layer and the
    /// layers below it have it.
    func resolve(_ position: UInt64, span: UInt64, request: UnsafeMutablePointer<BlockRequest>) -> Qcow2Piece {
        switch resolveHere(position, span: span, depth: 0, request: request) {
        case .piece(let piece):
            return piece
        case .belowThisLayer(let count):
            var layer = self
            var limit = count
            var depth: UInt8 = 0
            while true {
                switch layer.backing {
                case .none:
                    return .zeroes(count: limit)
                case .raw(let file):
                    let size = file.length
                    if position >= size { return .zeroes(count: limit) }
                    return .read(fd: file.fd, hostOffset: position, count: min(limit, size - position))
                case .qcow2(let next):
                    guard depth < UInt8.max - 1 else { return .corrupt(.corruptL1Entry) }  // chains are limited far below this at open
                    depth += 1
                    switch next.resolveHere(position, span: limit, depth: depth, request: request) {
                    case .piece(let piece): return piece
                    case .belowThisLayer(let count):
                        layer = next
                        limit = count
                    }
                }
            }
        }
    }

    enum LayerAnswer {
        case piece(Qcow2Piece)
        /// Unallocated here for `count` bytes: ask the backing layer.
        case belowThisLayer(count: UInt64)
    }

    /// This layer's answer for `position`: a piece, or "unallocated for N bytes".
    @inline(__always)
    /// `depth` is this layer's distance from the request's own layer.
    func resolveHere(_ position: UInt64, span: UInt64, depth: UInt8, request: UnsafeMutablePointer<BlockRequest>) -> LayerAnswer {
        let size = layout.virtualSize
        // Past this layer's end (a backing image smaller than its overlay): zeroes.
        if position >= size { return .piece(.zeroes(count: span)) }
        let wanted = min(span, size - position)
        let clusterBits = UInt64(layout.clusterBits)
        let clusterSize = layout.clusterSize
        let offsetInCluster = position & (clusterSize - 1)
        let inFirstCluster = min(wanted, clusterSize - offsetInCluster)
        let l1Index = position >> (clusterBits + UInt64(layout.l2Bits))
        let tableOffset = l2TableOffset(l1Index)
        if tableOffset == Self.corruptL1 { return .piece(.corrupt(.corruptL1Entry)) }
        if tableOffset == 0 { return .belowThisLayer(count: inFirstCluster) }
        let index = Int((position >> clusterBits) & ((1 << UInt64(layout.l2Bits)) - 1))
        guard let raw = l2Entry(l1Index: l1Index, index: index, depth: depth, request: request) else {
            return .piece(.loadTable(depth: depth, fd: fd, l1Index: l1Index, tableOffset: tableOffset))
        }
        switch layout.check(Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits)) {
        case .unallocated:
            return .belowThisLayer(count: inFirstCluster)
        case .zero:
            return .piece(.zeroes(count: inFirstCluster))
        case .data(let hostOffset, _):
            // Join the following clusters of the same table while they follow on the host.
            var count = inFirstCluster
            var next = index + 1
            let entries = 1 << Int(layout.l2Bits)
            while count < wanted && next < entries {
                guard let nextRaw = l2Entry(l1Index: l1Index, index: next, depth: depth, request: request),
                      case .data(let nextHost, _) = layout.check(Qcow2Entries.decodeL2(nextRaw, clusterBits: layout.clusterBits)),
                      nextHost == hostOffset + offsetInCluster + count else { break }
                count += min(clusterSize, wanted - count)
                next += 1
            }
            return .piece(.read(fd: fd, hostOffset: hostOffset + offsetInCluster, count: count))
        case .compressed(let hostOffset, let byteCount):
            return .piece(.compressed(fd: fd, clusterBits: layout.clusterBits, hostOffset: hostOffset,
                                      byteCount: min(byteCount, layout.fileLength - hostOffset),
                                      offsetInCluster: offsetInCluster, count: inFirstCluster))
        case .corrupt(let problem):
            return .piece(.corrupt(problem))
        }
    }

    /// An L2 entry from the shared cache, else from the table the request read itself.
    @inline(__always)
    func l2Entry(l1Index: UInt64, index: Int, depth: UInt8, request: UnsafeMutablePointer<BlockRequest>) -> UInt64? {
        if let raw = cache.entry(l1Index: l1Index, index: index) { return raw }
        guard request.pointee.formatTableDepth == depth, request.pointee.formatTableIndex == l1Index else { return nil }
        return UInt64(bigEndian: Qcow2Pieces.table(request).load(fromByteOffset: index * 8, as: UInt64.self))
    }
}
